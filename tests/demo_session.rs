//! The demo's session over real HTTP (issue 12, items 1 and 7): a
//! cross-site join is refused and costs the victim nothing; session ids are
//! issued and signed by the server, so a made-up or forged one is not a
//! session; a valid live session cookie is never replaced; the layer and the
//! room read the cookie with the same parser; the per-address join limit
//! counts addresses resolved through trusted proxies; refused requests do
//! not move the client-clock histogram.

mod demo_support;

use demo_support::*;

fn set_cookie(r: &Reply) -> Option<String> {
    r.headers
        .get(http::header::SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn join_with(demo: &Demo, headers: &[(&str, String)]) -> Reply {
    let mut h = vec![("queue-client-time", now_ms().to_string())];
    h.extend(headers.iter().cloned());
    demo.send("POST", "/queue/join", &h, "").await
}

#[tokio::test]
async fn a_cross_site_join_is_refused_without_a_cookie_and_the_victim_keeps_its_place() {
    let demo = start(&["--admit-per-sec", "0"]).await;
    let mut victim = Person::new();
    assert_eq!(victim.join(&demo).await.status, 200);
    let place = victim.position();
    let origin = demo.base.clone();

    // A form on another site posting to the join: the browser withholds the
    // SameSite=Strict cookie and says where the request comes from.
    let attacks: Vec<Vec<(&str, String)>> = vec![
        vec![
            ("sec-fetch-site", "cross-site".into()),
            ("origin", "http://evil.example".into()),
        ],
        vec![("sec-fetch-site", "cross-site".into())],
        vec![("sec-fetch-site", "same-site".into())],
        // An older browser: no Sec-Fetch-Site, a foreign Origin.
        vec![("origin", "http://evil.example".into())],
        vec![("origin", "null".into())],
        // The same host on another scheme or port is another origin.
        vec![("origin", origin.replace("http://", "https://"))],
        vec![("origin", format!("{origin}1"))],
    ];
    for headers in &attacks {
        let r = join_with(&demo, headers).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "cross_site"),
            "{headers:?}"
        );
        assert_eq!(set_cookie(&r), None, "no cookie for {headers:?}");
        assert!(r.json()["detail"]
            .as_str()
            .unwrap()
            .contains("another site"));
        // The heartbeat refuses it too.
        let mut h = victim.headers(true);
        h.extend(headers.iter().cloned());
        let r = demo.send("POST", "/queue/heartbeat", &h, "").await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "cross_site"),
            "{headers:?}"
        );
        assert_eq!(set_cookie(&r), None);
    }
    // The victim's next heartbeat works, at the same place.
    let r = victim.beat(&demo).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(victim.position(), place);
    assert_eq!(demo.app.room.stats().await.unwrap().waiting, 1);

    // The page itself (same origin), a navigation the person typed, and a
    // client that is no browser at all are let through.
    for headers in [
        vec![("sec-fetch-site", "same-origin".to_owned())],
        vec![("sec-fetch-site", "none".to_owned())],
        vec![("origin", origin.clone())],
        vec![
            ("sec-fetch-site", "same-origin".to_owned()),
            ("origin", origin.clone()),
        ],
        vec![],
    ] {
        let mut h = victim.headers(true);
        h.extend(headers.iter().cloned());
        let r = demo.send("POST", "/queue/heartbeat", &h, "").await;
        assert_eq!(r.status, 200, "{headers:?}: {}", r.body);
        victim.ticket = Some(r.json()["ticket"].as_str().unwrap().to_owned());
        let r = join_with(&demo, &headers).await;
        assert_eq!(r.status, 200, "{headers:?}: {}", r.body);
    }
}

#[tokio::test]
async fn trusted_origins_may_join_from_another_site() {
    let demo = start(&[
        "--admit-per-sec",
        "0",
        "--trusted-origin",
        "https://www.example.org",
        "--trusted-origin",
        "http://partner.example:8080",
    ])
    .await;
    for origin in ["https://www.example.org", "http://partner.example:8080"] {
        let r = join_with(
            &demo,
            &[
                ("sec-fetch-site", "cross-site".into()),
                ("origin", origin.into()),
            ],
        )
        .await;
        assert_eq!(r.status, 200, "{origin}: {}", r.body);
        assert!(set_cookie(&r).is_some());
    }
    let r = join_with(&demo, &[("origin", "https://www.example.org.evil".into())]).await;
    assert_eq!((r.status, r.code().as_str()), (403, "cross_site"));
}

#[tokio::test]
async fn session_ids_are_issued_and_signed_by_the_server() {
    let demo = start(&["--admit-per-sec", "0"]).await;
    let mut me = Person::new();
    let r = me.join(&demo).await;
    assert_eq!(r.status, 200);
    let mine = me.cookie.clone().unwrap();
    let first = r.json();

    // A valid live session is never replaced: joining again (a reload)
    // hands back the same place and sets no cookie.
    for _ in 0..2 {
        let r = me.join(&demo).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            set_cookie(&r),
            None,
            "a valid session cookie is never replaced"
        );
        assert_eq!(r.json()["position"], first["position"]);
    }
    assert_eq!(me.beat(&demo).await.status, 200);
    assert_eq!(me.cookie.as_deref(), Some(mine.as_str()));

    // A made-up id (the old format) and a forged signature are no session:
    // the join issues a new signed id, and the place is bound to that one.
    let mut forged_tag = mine.clone().into_bytes();
    let last = forged_tag.len() - 2;
    forged_tag[last] = if forged_tag[last] == b'A' { b'B' } else { b'A' };
    let forged_tag = String::from_utf8(forged_tag).unwrap();
    for made_up in [
        "00112233445566778899aabbccddeeff".to_owned(),
        "ffffffffffffffffffffffffffffffff".to_owned(),
        forged_tag,
        format!("{mine}A"),
        mine[..mine.len() - 1].to_owned(),
    ] {
        let mut bot = Person::new();
        bot.cookie = Some(made_up.clone());
        let r = bot.join(&demo).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let issued = bot.cookie.clone().unwrap();
        assert_ne!(issued, made_up, "the made-up id {made_up:?} was not taken");
        assert!(set_cookie(&r).is_some());
        // The made-up id with the ticket the join gave out: no place.
        let mut liar = bot.clone();
        liar.cookie = Some(made_up.clone());
        let r = liar.beat(&demo).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (403, "binding_mismatch"),
            "{made_up:?}"
        );
        // The issued one works.
        assert_eq!(bot.beat(&demo).await.status, 200);
    }
    // Five bots, one person: six places, none for a made-up id.
    assert_eq!(demo.app.room.stats().await.unwrap().waiting, 6);
    // The original is still mine.
    assert_eq!(me.beat(&demo).await.status, 200);
}

/// The cookie header variants a browser, a proxy or a script may send, and
/// whether they carry the session: the room (join, heartbeat) and the layer
/// (`/slots`) must agree on every one.
#[tokio::test]
async fn the_layer_and_the_room_read_the_session_cookie_alike() {
    let demo = start(&["--admit-per-sec", "50"]).await;
    let mut me = Person::new();
    me.join(&demo).await;
    me.beat_until_admitted(&demo).await;
    let id = me.cookie.clone().unwrap();
    let other = {
        let mut p = Person::new();
        p.join(&demo).await;
        p.cookie.unwrap()
    };
    let cases: Vec<(String, bool)> = vec![
        (format!("qg_session={id}"), true),
        (format!("qg_session ={id}"), true),
        (format!("qg_session= {id}"), true),
        (format!("qg_session\t=\t{id} "), true),
        (format!(" a=1 ;qg_session={id};b=2"), true),
        (format!("qg_session=\"{id}\""), true),
        (format!("qg_session={id}; qg_session={id}"), true),
        (format!("qg_session={id}; qg_session={other}"), false),
        (format!("qg_session=; qg_session={id}"), false),
        (format!("QG_SESSION={id}"), false),
        (format!("xqg_session={id}"), false),
        (format!("qg_session={id}x"), false),
        ("qg_session=".to_owned(), false),
        (format!("qg_session:{id}"), false),
    ];
    for (cookie, carries) in &cases {
        let ticket = me.ticket.clone().unwrap();
        let with = |extra: Vec<(&'static str, String)>| {
            let mut h = vec![
                ("cookie", cookie.clone()),
                ("queue-client-time", now_ms().to_string()),
            ];
            h.extend(extra);
            h
        };
        // The layer: the admitted ticket passes only with the session.
        let slots = demo
            .send("GET", "/slots", &with(vec![("queue-ticket", ticket)]), "")
            .await;
        // The room's join: the same session is recognised (no new cookie,
        // the same chain), or it is not (a new session, or a refusal).
        let join = demo.send("POST", "/queue/join", &with(vec![]), "").await;
        let recognised = join.status == 200
            && set_cookie(&join).is_none()
            && join.json()["position"] == me.last.as_ref().unwrap()["position"];
        assert_eq!(
            recognised, *carries,
            "join with cookie {cookie:?}: {}",
            join.body
        );
        assert_eq!(
            slots.status == 200,
            *carries,
            "/slots with cookie {cookie:?}: {}",
            slots.body
        );
        if !carries {
            assert_eq!(slots.code(), "binding_mismatch", "{cookie:?}");
        }
        if recognised {
            // A rejoin re-mints the chain's ticket (issue 12 item 5): the
            // next case presents the newest one, as the page would.
            me.ticket = join.json()["ticket"].as_str().map(str::to_owned);
        }
    }
    // Two different session cookies are ambiguous: the join refuses rather
    // than guess or replace either.
    let r = demo
        .send(
            "POST",
            "/queue/join",
            &[("cookie", format!("qg_session={id}; qg_session={other}"))],
            "",
        )
        .await;
    assert_eq!((r.status, r.code().as_str()), (400, "malformed"));
    assert_eq!(set_cookie(&r), None);
}

#[tokio::test]
async fn refused_requests_do_not_move_the_clock_histogram() {
    let demo = start(&["--admit-per-sec", "0"]).await;
    let count = "queuegate_client_clock_offset_ms_count";
    let mut waiting = Person::new();
    waiting.join(&demo).await;
    let before = demo.metric(count).await;
    // A waiting bot hammers the protected routes with its clock far ahead
    // (but inside the skew tolerance): every request is refused.
    waiting.clock_offset_ms = 240_000;
    for _ in 0..20 {
        let r = waiting.slots(&demo).await;
        assert_eq!((r.status, r.code().as_str()), (429, "not_admitted"));
    }
    assert_eq!(
        demo.metric(count).await,
        before,
        "refusals moved the histogram"
    );

    // A passing chain is observed, once, however often it is used.
    demo.app.room.set_admit_per_sec(50.0).unwrap();
    let mut me = Person::new();
    me.join(&demo).await;
    me.beat_until_admitted(&demo).await;
    me.clock_offset_ms = 1_000;
    for _ in 0..10 {
        assert_eq!(me.slots(&demo).await.status, 200);
    }
    assert_eq!(demo.metric(count).await, before + 1);
}

#[tokio::test]
async fn joins_per_address_are_limited_through_trusted_proxies() {
    let demo = start(&[
        "--admit-per-sec",
        "0",
        "--trusted-proxy",
        "127.0.0.0/8",
        "--joins-per-addr",
        "3",
    ])
    .await;
    let from = |xff: &str| vec![("x-forwarded-for", xff.to_owned())];
    // One address behind the proxy: three joins (three sessions), then no.
    let mut ok = 0;
    let mut refused = 0;
    for _ in 0..5 {
        let r = join_with(&demo, &from("198.51.100.7")).await;
        match r.status {
            200 => ok += 1,
            429 => {
                assert_eq!(r.code(), "join_refused");
                assert_eq!(set_cookie(&r), None);
                refused += 1;
            }
            s => panic!("unexpected {s}: {}", r.body),
        }
    }
    assert_eq!((ok, refused), (3, 2));
    // A spoofed hop on the left changes nothing: the rightmost untrusted
    // address is the client.
    let r = join_with(&demo, &from("203.0.113.9, 198.51.100.7")).await;
    assert_eq!(r.status, 429);
    // Others still join: 10 other addresses, and one IPv6 /64 counted once.
    for i in 0..10 {
        let r = join_with(&demo, &from(&format!("198.51.100.{}", 100 + i))).await;
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let mut v6 = 0;
    for addr in [
        "2001:db8:1:2::1",
        "2001:db8:1:2::2",
        "2001:db8:1:2:ffff::1",
        "2001:db8:1:2:abcd:ef01:2345:6789",
    ] {
        let r = join_with(&demo, &from(addr)).await;
        if r.status == 200 {
            v6 += 1;
        }
    }
    assert_eq!(v6, 3, "one /64 is one address");
    assert_eq!(demo.app.room.stats().await.unwrap().waiting, 3 + 10 + 3);
}
