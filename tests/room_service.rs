//! `queuegate::room::http::RoomService` over real HTTP: the axum `Router`
//! from `RoomEndpoints::router` on 127.0.0.1, a hyper client. The cookie's
//! attributes (with `Secure` when the host says HTTPS), a second
//! `queue-ticket` header refused, a join hook refusing by address, the
//! problem document of every room error a client can reach, leave, status
//! without renewal, the client script; and the service driven by hyper
//! with a `PeerAddr` extension.
#![cfg(feature = "axum")]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::header::{CONTENT_TYPE, RETRY_AFTER, SET_COOKIE};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use queuegate::room::http::{
    CrossSiteGuard, PeerAddr, PerAddressLimit, RoomEndpoints, RoomSessions, SessionKeys,
    TrustedProxies, CLIENT_JS,
};
use queuegate::room::{JoinContext, JoinVerdict, MemoryRoomState, WaitingRoom};
use queuegate::{Issuer, KeyRing, ManualClock, MemoryReplayStore, Policy};
use tower::ServiceExt;

const T0: i64 = 1_700_000_000_000;

struct Options {
    scheme: &'static str,
    max_waiting: u64,
    joins_per_minute: u32,
    per_sec: f64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            scheme: "http",
            max_waiting: 1_000,
            joins_per_minute: 0,
            per_sec: 0.0,
        }
    }
}

type Room = WaitingRoom<ManualClock, MemoryReplayStore, MemoryRoomState, Option<PerAddressLimit>>;

fn room(o: &Options, clock: &ManualClock) -> Arc<Room> {
    let keys = Arc::new(KeyRing::new(1, &[3u8; 32]).unwrap());
    let issuer = Issuer::new(
        keys,
        Policy::new("room-service"),
        clock.clone(),
        Arc::new(MemoryReplayStore::new()),
    )
    .unwrap();
    let limit = (o.joins_per_minute > 0)
        .then(|| PerAddressLimit::new(o.joins_per_minute, Duration::from_secs(60)).unwrap());
    Arc::new(
        WaitingRoom::builder(issuer, MemoryRoomState::new())
            .admit_per_sec(o.per_sec)
            .unwrap()
            .max_waiting(o.max_waiting)
            .liveness(Duration::from_secs(10), Duration::from_secs(30))
            .unwrap()
            .join_hook(limit)
            .build()
            .unwrap(),
    )
}

fn sessions(scheme: &str) -> RoomSessions {
    RoomSessions::new(
        SessionKeys::new(1, &[4u8; 32]).unwrap(),
        CrossSiteGuard::new(scheme).unwrap(),
    )
}

struct Server {
    base: String,
    clock: ManualClock,
    room: Arc<Room>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_with(o: Options, endpoints: impl FnOnce(Arc<Room>) -> axum::Router) -> Server {
    let clock = ManualClock::new(T0);
    let room = room(&o, &clock);
    let router = endpoints(room.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).await.unwrap();
    });
    Server {
        base,
        clock,
        room,
        task,
    }
}

async fn serve(o: Options) -> Server {
    let scheme = o.scheme;
    // The test client connects from 127.0.0.1, "the load balancer": its
    // X-Forwarded-For names the client.
    serve_with(o, |room| {
        RoomEndpoints::new(room, sessions(scheme))
            .trusted_proxies(TrustedProxies::new().trust("127.0.0.1").unwrap())
            .router()
    })
    .await
}

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| panic!("JSON: {}", self.body))
    }

    /// The `qg_session=...` part of the Set-Cookie, to send back.
    fn cookie(&self) -> String {
        let c = self.headers[SET_COOKIE].to_str().unwrap();
        c.split(';').next().unwrap().to_owned()
    }

    fn ticket(&self) -> String {
        self.json()["ticket"].as_str().unwrap().to_owned()
    }

    /// A problem document with `code`, its plain words and a `Retry-After`
    /// that agrees with `retry_after` (whole seconds).
    fn assert_problem(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.headers[CONTENT_TYPE], "application/problem+json");
        let d = self.json();
        assert_eq!(d["code"], code, "{self:?}");
        assert_eq!(d["status"], status);
        assert!(!d["detail"].as_str().unwrap().is_empty());
        assert!(d["type"].as_str().unwrap().ends_with(code));
        let header = self
            .headers
            .get(RETRY_AFTER)
            .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
        assert_eq!(header, d.get("retry_after").and_then(|v| v.as_u64()));
        assert!(
            self.headers.get(SET_COOKIE).is_none(),
            "a refusal sets no cookie"
        );
    }
}

async fn call(method: &str, url: &str, headers: &[(&str, &str)]) -> Reply {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        // `header` appends: a name given twice is sent twice.
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let body =
        String::from_utf8(res.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap();
    Reply {
        status,
        headers,
        body,
    }
}

async fn join(s: &Server, headers: &[(&str, &str)]) -> Reply {
    call("POST", &format!("{}/queue/join", s.base), headers).await
}

async fn beat(s: &Server, cookie: &str, ticket: &str) -> Reply {
    call(
        "POST",
        &format!("{}/queue/heartbeat", s.base),
        &[("cookie", cookie), ("queue-ticket", ticket)],
    )
    .await
}

#[tokio::test]
async fn join_answers_the_contract_and_sets_the_cookie_once() {
    let s = serve(Options::default()).await;
    let first = join(&s, &[("queue-client-time", &T0.to_string())]).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(first.headers[CONTENT_TYPE], "application/json");
    assert_eq!(first.headers["cache-control"], "no-store");
    let d = first.json();
    let mut keys: Vec<_> = d.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "admitted",
            "ahead",
            "estimated_wait_ms",
            "opens_in_ms",
            "position",
            "retry_after_ms",
            "ticket"
        ]
    );
    assert_eq!(d["position"], 1);
    assert_eq!(d["admitted"], false);
    // Admission is paused (0 per second): no estimate.
    assert!(d["estimated_wait_ms"].is_null());

    let set_cookie = first.headers[SET_COOKIE].to_str().unwrap();
    let attrs: Vec<&str> = set_cookie.split("; ").collect();
    assert!(attrs[0].starts_with("qg_session=") && attrs[0].len() == 11 + 44);
    for a in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(attrs.contains(&a), "{a} in {set_cookie}");
    }
    assert!(!attrs.contains(&"Secure"), "plain HTTP: {set_cookie}");

    // The same session again: its place back, and its cookie is not replaced.
    let cookie = first.cookie();
    let again = join(&s, &[("cookie", &cookie)]).await;
    assert_eq!(again.status, 200);
    assert!(again.headers.get(SET_COOKIE).is_none());
    assert_eq!(again.json()["position"], 1);

    // The heartbeat renews it.
    let renewed = beat(&s, &cookie, &first.ticket()).await;
    assert_eq!(renewed.status, 200, "{renewed:?}");
    assert_ne!(renewed.ticket(), first.ticket());
    assert_eq!(renewed.json()["position"], 1);
}

#[tokio::test]
async fn the_cookie_is_secure_when_the_host_says_https_and_its_scope_is_settable() {
    let s = serve(Options {
        scheme: "https",
        ..Options::default()
    })
    .await;
    let r = join(&s, &[]).await;
    assert_eq!(r.status, 200);
    let c = r.headers[SET_COOKIE].to_str().unwrap();
    for a in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(c.split("; ").any(|x| x == a), "{a} in {c}");
    }

    let scoped = serve_with(Options::default(), |room| {
        let sessions = sessions("https")
            .cookie_name("__Secure-qg")
            .unwrap()
            .cookie_scope("/app", Some("example.test"))
            .unwrap();
        RoomEndpoints::new(room, sessions).router()
    })
    .await;
    let r = join(&scoped, &[]).await;
    let c = r.headers[SET_COOKIE].to_str().unwrap();
    assert!(c.starts_with("__Secure-qg="), "{c}");
    for a in [
        "HttpOnly",
        "SameSite=Strict",
        "Path=/app",
        "Domain=example.test",
        "Secure",
    ] {
        assert!(c.split("; ").any(|x| x == a), "{a} in {c}");
    }
    assert!(sessions("http").cookie_scope("/a; Secure", None).is_err());
    assert!(sessions("http").cookie_scope("/", Some("a b")).is_err());
}

#[tokio::test]
async fn a_second_queue_ticket_header_is_refused_and_changes_nothing() {
    let s = serve(Options::default()).await;
    let first = join(&s, &[]).await;
    let (cookie, ticket) = (first.cookie(), first.ticket());
    let two = call(
        "POST",
        &format!("{}/queue/heartbeat", s.base),
        &[
            ("cookie", &cookie),
            ("queue-ticket", &ticket),
            ("queue-ticket", &ticket),
        ],
    )
    .await;
    two.assert_problem(400, "malformed");
    // Nothing was renewed: the same ticket still renews once.
    let one = beat(&s, &cookie, &ticket).await;
    assert_eq!(one.status, 200, "{one:?}");
    assert_eq!(one.json()["position"], 1);
}

#[tokio::test]
async fn the_join_hook_refuses_by_address_while_others_join() {
    let s = serve(Options {
        joins_per_minute: 2,
        ..Options::default()
    })
    .await;
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    // Fresh sessions from one address: two join, the rest are refused.
    let mut refused = 0;
    let mut joined = 0;
    for _ in 0..5 {
        let r = join(&s, &from("198.51.100.7")).await;
        match r.status {
            200 => joined += 1,
            _ => {
                r.assert_problem(429, "join_refused");
                assert!(r.headers.contains_key(RETRY_AFTER));
                refused += 1;
            }
        }
    }
    assert_eq!((joined, refused), (2, 3));
    // Another address (and another /64) still joins.
    for ip in ["203.0.113.9", "2001:db8:1::1", "2001:db8:2::1"] {
        assert_eq!(join(&s, &from(ip)).await.status, 200, "{ip}");
    }
    // The same /64 shares one count.
    assert_eq!(join(&s, &from("2001:db8:1::2")).await.status, 200);
    join(&s, &from("2001:db8:1::3"))
        .await
        .assert_problem(429, "join_refused");
}

#[tokio::test]
async fn every_room_error_a_client_can_meet_is_a_problem_document() {
    let s = serve(Options {
        max_waiting: 2,
        ..Options::default()
    })
    .await;
    let a = join(&s, &[]).await;
    let (cookie, ticket) = (a.cookie(), a.ticket());
    let b = join(&s, &[]).await;
    assert_eq!(b.status, 200);
    // room_full (503, Retry-After 60).
    let full = join(&s, &[]).await;
    full.assert_problem(503, "room_full");
    assert_eq!(full.headers[RETRY_AFTER], "60");
    // cross_site (403), and no cookie.
    join(&s, &[("sec-fetch-site", "cross-site")])
        .await
        .assert_problem(403, "cross_site");
    call(
        "POST",
        &format!("{}/queue/heartbeat", s.base),
        &[
            ("origin", "https://evil.example"),
            ("queue-ticket", &ticket),
        ],
    )
    .await
    .assert_problem(403, "cross_site");
    // missing (no ticket), malformed (garbage), binding_mismatch (another session).
    call(
        "POST",
        &format!("{}/queue/heartbeat", s.base),
        &[("cookie", &cookie)],
    )
    .await
    .assert_problem(403, "missing");
    beat(&s, &cookie, "not-a-ticket")
        .await
        .assert_problem(400, "malformed");
    beat(&s, &b.cookie(), &ticket)
        .await
        .assert_problem(403, "binding_mismatch");
    // clock_skew at the join: a clock an hour off.
    join(&s, &[("queue-client-time", &(T0 + 3_600_000).to_string())])
        .await
        .assert_problem(403, "clock_skew");
    // offline_resumed: past the liveness deadline.
    s.clock.advance(Duration::from_secs(31));
    beat(&s, &b.cookie(), &b.ticket())
        .await
        .assert_problem(403, "offline_resumed");
    // ended (410): the chain left.
    let renewed = beat(&s, &cookie, &ticket).await;
    let renewed = if renewed.status == 200 {
        renewed.ticket()
    } else {
        // a's deadline passed too: rejoin first.
        join(&s, &[("cookie", &cookie)]).await.ticket()
    };
    let left = call(
        "POST",
        &format!("{}/queue/leave", s.base),
        &[("cookie", &cookie), ("queue-ticket", &renewed)],
    )
    .await;
    assert_eq!(left.status, 204, "{left:?}");
    beat(&s, &cookie, &renewed)
        .await
        .assert_problem(410, "ended");
    // A leave from another site is refused: it changes state.
    call(
        "POST",
        &format!("{}/queue/leave", s.base),
        &[("cookie", &cookie), ("sec-fetch-site", "cross-site")],
    )
    .await
    .assert_problem(403, "cross_site");
    // room_closed (410): the operator's message, to joins and heartbeats.
    s.room.close("Sold out: thank you for waiting.").unwrap();
    let closed = join(&s, &[]).await;
    closed.assert_problem(410, "room_closed");
    assert_eq!(closed.json()["detail"], "Sold out: thank you for waiting.");
}

#[tokio::test]
async fn status_reads_without_renewing() {
    let s = serve(Options {
        per_sec: 0.5,
        ..Options::default()
    })
    .await;
    let first = join(&s, &[]).await;
    // admitted at once (a token is there at the start); the second waits.
    let second = join(&s, &[]).await;
    let third = join(&s, &[]).await;
    assert_eq!(third.json()["position"], 3);
    let url = format!("{}/queue/status", s.base);
    let st = call(
        "GET",
        &url,
        &[
            ("cookie", &third.cookie()),
            ("queue-ticket", &third.ticket()),
        ],
    )
    .await;
    assert_eq!(st.status, 200, "{st:?}");
    let d = st.json();
    assert_eq!(d["position"], 3);
    assert_eq!(d["admitted"], false);
    let ahead = d["ahead"].as_u64().unwrap();
    assert!((1..=2).contains(&ahead), "{d}");
    assert!(d["estimated_wait_ms"].as_u64().unwrap() >= 2_000 * ahead);
    assert!(d["live_for_ms"].as_u64().unwrap() > 0);
    assert_eq!(d["paused"], false);
    // Nothing renewed: the ticket still renews once, as sequence 0 would.
    let renewed = beat(&s, &third.cookie(), &third.ticket()).await;
    assert_eq!(renewed.status, 200, "{renewed:?}");
    // Status with another's ticket is refused like a heartbeat.
    call(
        "GET",
        &url,
        &[
            ("cookie", &second.cookie()),
            ("queue-ticket", &first.ticket()),
        ],
    )
    .await
    .assert_problem(403, "binding_mismatch");
    // Without a ticket: the room only.
    let room = call("GET", &url, &[]).await.json();
    assert!(room.get("position").is_none());
    assert!(room["waiting"].as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn serves_the_client_and_refuses_other_paths_and_methods() {
    let s = serve(Options::default()).await;
    let js = call("GET", &format!("{}/queue/client.js", s.base), &[]).await;
    assert_eq!(js.status, 200);
    assert_eq!(js.headers[CONTENT_TYPE], "text/javascript; charset=utf-8");
    assert_eq!(js.body, CLIENT_JS);
    let get_join = call("GET", &format!("{}/queue/join", s.base), &[]).await;
    assert_eq!(get_join.status, 405);
    assert_eq!(get_join.headers["allow"], "POST");
    assert_eq!(
        call("GET", &format!("{}/queue/nothing", s.base), &[])
            .await
            .status,
        404
    );
}

#[tokio::test]
async fn driven_by_hyper_the_peer_comes_from_the_peer_addr_extension() {
    let clock = ManualClock::new(T0);
    let keys = Arc::new(KeyRing::new(1, &[3u8; 32]).unwrap());
    let issuer = Issuer::new(
        keys,
        Policy::new("room-service"),
        clock,
        Arc::new(MemoryReplayStore::new()),
    )
    .unwrap();
    // A hook that refuses one address and notes whether it saw one.
    let hook = |j: &JoinContext<'_>| match j.client_addr.map(|a| a.ip().to_string()) {
        Some(ip) if ip == "192.0.2.66" => JoinVerdict::Refuse {
            reason: "this address is blocked",
            retry_after: None,
        },
        Some(_) => JoinVerdict::Allow,
        None => JoinVerdict::Refuse {
            reason: "no address",
            retry_after: None,
        },
    };
    let room = WaitingRoom::builder(issuer, MemoryRoomState::new())
        .join_hook(hook)
        .build()
        .unwrap();
    let service = RoomEndpoints::new(Arc::new(room), sessions("http")).build();
    let req = |peer: Option<&str>| {
        let mut r = http::Request::post("/queue/join").body(()).unwrap();
        if let Some(p) = peer {
            r.extensions_mut().insert(PeerAddr(p.parse().unwrap()));
        }
        r
    };
    let ok = service
        .clone()
        .oneshot(req(Some("192.0.2.1:5000")))
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let blocked = service
        .clone()
        .oneshot(req(Some("192.0.2.66:5000")))
        .await
        .unwrap();
    assert_eq!(blocked.status(), 429);
    let body = blocked.into_body().collect().await.unwrap().to_bytes();
    assert!(std::str::from_utf8(&body)
        .unwrap()
        .contains("this address is blocked"));
    let none = service.oneshot(req(None)).await.unwrap();
    assert_eq!(none.status(), 429);
}

#[tokio::test]
async fn the_base_path_is_checked_at_setup_and_followed() {
    let clock = ManualClock::new(T0);
    let endpoints = || RoomEndpoints::new(room(&Options::default(), &clock), sessions("http"));
    for bad in ["queue", "/queue/", "/que ue", "/queue?x", "/a%2f"] {
        assert!(endpoints().base(bad).is_err(), "{bad:?}");
    }
    let service = endpoints().base("/wait/here").unwrap().build();
    let post = |path: &str| http::Request::post(path.to_owned()).body(()).unwrap();
    let joined = service
        .clone()
        .oneshot(post("/wait/here/join"))
        .await
        .unwrap();
    assert_eq!(joined.status(), 200);
    let old = service.clone().oneshot(post("/queue/join")).await.unwrap();
    assert_eq!(old.status(), 404);
    let root = endpoints().base("").unwrap().build();
    assert_eq!(root.oneshot(post("/join")).await.unwrap().status(), 200);
}

/// The heartbeat endpoint feeds the client-clock offset histogram (which
/// the server-clock check reads) with the offsets of authentic tickets:
/// those that pass, and those refused for a reason of time, which is what
/// a server clock far off does to every honest ticket. A forged ticket or
/// one presented with another session's cookie adds nothing.
#[tokio::test]
async fn heartbeats_feed_the_offset_histogram_with_authentic_tickets_only() {
    let metrics = queuegate::Metrics::new();
    let m = metrics.clone();
    let s = serve_with(Options::default(), move |room| {
        RoomEndpoints::new(room, sessions("http"))
            .metrics(m)
            .router()
    })
    .await;
    let count = || metrics.snapshot().offset_count;
    let time = |ms: i64| ms.to_string();

    // An honest client, 400 ms behind: its heartbeat passes and counts.
    let first = join(&s, &[("queue-client-time", &time(T0))]).await;
    assert_eq!(first.status, 200, "{first:?}");
    assert_eq!(count(), 0, "a join is not authenticated evidence");
    let cookie = first.cookie();
    let headers = |ticket: &str, client_ms: i64| {
        vec![
            ("cookie".to_owned(), cookie.clone()),
            ("queue-ticket".to_owned(), ticket.to_owned()),
            ("queue-client-time".to_owned(), time(client_ms)),
        ]
    };
    let url = format!("{}/queue/heartbeat", s.base);
    let post = |h: Vec<(String, String)>| {
        let url = url.clone();
        async move {
            let h: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            call("POST", &url, &h).await
        }
    };
    let ok = post(headers(&first.ticket(), T0 - 400)).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(count(), 1);
    assert_eq!(metrics.snapshot().offset_sum_ms, -400);

    // Forged: nothing. Another session's cookie: nothing.
    let forged = post(headers(
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        T0,
    ))
    .await;
    assert_eq!(forged.status, 400, "{forged:?}");
    let other = join(&s, &[("queue-client-time", &time(T0))]).await;
    let theirs = call(
        "POST",
        &url,
        &[
            ("cookie", other.cookie().as_str()),
            ("queue-ticket", ok.ticket().as_str()),
            ("queue-client-time", time(T0).as_str()),
        ],
    )
    .await;
    assert_eq!(theirs.json()["code"], "binding_mismatch", "{theirs:?}");
    assert_eq!(count(), 1);

    // The server's clock jumps an hour ahead: the other (honest) client's
    // ticket is refused as an hour stale, and its offset (-1 h) counts.
    s.clock.advance(Duration::from_secs(3_600));
    let stale = call(
        "POST",
        &url,
        &[
            ("cookie", other.cookie().as_str()),
            ("queue-ticket", other.ticket().as_str()),
            ("queue-client-time", time(T0).as_str()),
        ],
    )
    .await;
    assert_eq!(stale.json()["code"], "offline_resumed", "{stale:?}");
    assert_eq!(count(), 2);
    assert_eq!(metrics.snapshot().offset_sum_ms, -400 - 3_600_000);
}
