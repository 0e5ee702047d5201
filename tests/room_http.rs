//! `queuegate::room::http` over real HTTP (an axum server on 127.0.0.1 and
//! a hyper client): the join hook sees the client's address resolved
//! through the trusted proxies and the request headers; IPv6 is counted by
//! its /64; the example per-address limit refuses one address beyond its
//! limit while others still join; the old `join` keeps working.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::ConnectInfo;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use http::request::Parts;
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use queuegate::room::http::{
    ClientAddr, CrossSiteGuard, PerAddressLimit, ProxyHeader, RoomSessions, SessionKeys,
    TrustedProxies,
};
use queuegate::room::{
    JoinContext, JoinHook, JoinRequest, JoinVerdict, MemoryRoomState, WaitingRoom,
};
use queuegate::{ClientTime, Issuer, KeyRing, ManualClock, MemoryReplayStore, Policy};

const T0: i64 = 1_700_000_000_000;

/// What the hook saw of each join: the address and one header.
#[derive(Default)]
struct Seen(Mutex<Vec<(Option<ClientAddr>, Option<String>)>>);

/// Records, then defers to the per-address limit (if any).
struct Recording {
    seen: Arc<Seen>,
    limit: Option<PerAddressLimit>,
}

impl JoinHook for Recording {
    fn on_join(
        &self,
        join: &JoinContext<'_>,
    ) -> impl std::future::Future<Output = JoinVerdict> + Send {
        let agent = join
            .headers
            .and_then(|h| h.get("user-agent"))
            .map(|v| v.to_str().unwrap().to_owned());
        self.seen.0.lock().unwrap().push((join.client_addr, agent));
        self.limit.on_join(join)
    }
}

type Room = WaitingRoom<ManualClock, MemoryReplayStore, MemoryRoomState, Recording>;

struct App {
    room: Room,
    sessions: RoomSessions,
    proxies: TrustedProxies,
}

async fn join(State(app): State<Arc<App>>, parts: Parts) -> Response<Body> {
    let session = match app.sessions.join(&parts.headers, &parts.uri) {
        Ok(s) => s,
        Err(e) => return e.problem_response().map(Body::from),
    };
    let ConnectInfo(peer) = *parts.extensions.get::<ConnectInfo<SocketAddr>>().unwrap();
    let request = JoinRequest::new(session.id().as_bytes(), ClientTime::Absent)
        .client_addr(app.proxies.resolve(peer.ip(), &parts.headers))
        .headers(&parts.headers);
    let status = match app.room.join_with(&request).await {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status(),
    };
    let mut res = Response::new(Body::empty());
    *res.status_mut() = status;
    if let (StatusCode::OK, Some(c)) = (status, session.set_cookie()) {
        res.headers_mut()
            .insert(http::header::SET_COOKIE, c.clone());
    }
    res
}

struct Server {
    base: String,
    room_app: Arc<App>,
    seen: Arc<Seen>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(proxies: TrustedProxies, limit: Option<PerAddressLimit>) -> Server {
    let clock = ManualClock::new(T0);
    let keys = Arc::new(KeyRing::new(1, &[3u8; 32]).unwrap());
    let issuer = Issuer::new(
        keys,
        Policy::new("room-http"),
        clock,
        Arc::new(MemoryReplayStore::new()),
    )
    .unwrap();
    let seen = Arc::new(Seen::default());
    let room = WaitingRoom::builder(issuer, MemoryRoomState::new())
        .admit_per_sec(0.0)
        .unwrap()
        .join_hook(Recording {
            seen: seen.clone(),
            limit,
        })
        .build()
        .unwrap();
    let app = Arc::new(App {
        room,
        sessions: RoomSessions::new(
            SessionKeys::new(1, &[4u8; 32]).unwrap(),
            CrossSiteGuard::new("http").unwrap(),
        ),
        proxies,
    });
    let router = Router::new()
        .route("/queue/join", post(join))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        axum::serve(listener, service).await.unwrap();
    });
    Server {
        base,
        room_app: app,
        seen,
        task,
    }
}

async fn post_join(base: &str, headers: &[(&str, &str)]) -> u16 {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut req = http::Request::post(format!("{base}/queue/join"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = res.status().as_u16();
    let _ = res.into_body().collect().await.unwrap();
    status
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn the_join_hook_sees_the_address_resolved_through_trusted_proxies() {
    // The test client connects from 127.0.0.1: that is "the load balancer".
    let proxies = TrustedProxies::new()
        .trust("127.0.0.1")
        .unwrap()
        .trust("10.0.0.0/8")
        .unwrap();
    let s = serve(proxies, None).await;
    let cases: [(&[(&str, &str)], &str); 5] = [
        (&[], "127.0.0.1"),
        (&[("x-forwarded-for", "198.51.100.7")], "198.51.100.7"),
        // Spoofed on the left, a second trusted proxy on the right.
        (
            &[("x-forwarded-for", "203.0.113.66, 198.51.100.8, 10.1.1.1")],
            "198.51.100.8",
        ),
        (
            &[("x-forwarded-for", "[2001:db8:7:7::1]:443")],
            "2001:db8:7:7::1",
        ),
        // The header the proxies do not write is not believed.
        (&[("forwarded", "for=203.0.113.66")], "127.0.0.1"),
    ];
    for (headers, _) in &cases {
        let mut h = headers.to_vec();
        h.push(("user-agent", "room-http-test"));
        assert_eq!(post_join(&s.base, &h).await, 200);
    }
    let seen = s.seen.0.lock().unwrap().clone();
    assert_eq!(seen.len(), cases.len());
    for ((addr, agent), (headers, want)) in seen.iter().zip(&cases) {
        assert_eq!(addr.map(|a| a.ip()), Some(ip(want)), "{headers:?}");
        assert_eq!(agent.as_deref(), Some("room-http-test"));
    }

    // Without trusted proxies the peer is the client, whatever it says.
    let s = serve(TrustedProxies::new(), None).await;
    assert_eq!(
        post_join(&s.base, &[("x-forwarded-for", "198.51.100.7")]).await,
        200
    );
    let seen = s.seen.0.lock().unwrap().clone();
    assert_eq!(seen[0].0.map(|a| a.ip()), Some(ip("127.0.0.1")));

    // `Forwarded` when the proxies write that.
    let s = serve(
        TrustedProxies::new()
            .trust("127.0.0.1")
            .unwrap()
            .header(ProxyHeader::Forwarded),
        None,
    )
    .await;
    let h = [("forwarded", "for=203.0.113.1, for=\"[2001:db8::9]:80\"")];
    assert_eq!(post_join(&s.base, &h).await, 200);
    let seen = s.seen.0.lock().unwrap().clone();
    assert_eq!(seen[0].0.map(|a| a.ip()), Some(ip("2001:db8::9")));

    // The old `join` still works; its hook sees no address and no headers.
    s.room_app
        .room
        .join(b"no-http", ClientTime::Absent)
        .await
        .unwrap();
    let seen = s.seen.0.lock().unwrap().clone();
    assert_eq!(seen.last().unwrap(), &(None, None));
}

#[tokio::test]
async fn the_per_address_limit_counts_addresses_not_requests() {
    let proxies = TrustedProxies::new().trust("127.0.0.1").unwrap();
    let limit = PerAddressLimit::new(2, Duration::from_secs(60)).unwrap();
    let s = serve(proxies, Some(limit)).await;
    let from = |xff: &'static str| [("x-forwarded-for", xff)];

    // One IPv4 address: two joins, then refused (429), five times over.
    let mut one = (0, 0);
    for _ in 0..7 {
        match post_join(&s.base, &from("198.51.100.1")).await {
            200 => one.0 += 1,
            429 => one.1 += 1,
            other => panic!("status {other}"),
        }
    }
    assert_eq!(one, (2, 5));

    // One IPv6 /64, many addresses in it: still one client.
    let mut v6 = (0, 0);
    for a in [
        "2001:db8:aa:bb::1",
        "2001:db8:aa:bb::2",
        "2001:db8:aa:bb:1:2:3:4",
        "2001:db8:aa:bb:ffff:ffff:ffff:ffff",
    ] {
        match post_join(&s.base, &[("x-forwarded-for", a)]).await {
            200 => v6.0 += 1,
            _ => v6.1 += 1,
        }
    }
    assert_eq!(v6, (2, 2));

    // Everyone else still joins: twenty other addresses and the next /64.
    let mut others = 0;
    for i in 0..20 {
        let xff = format!("203.0.113.{i}");
        if post_join(&s.base, &[("x-forwarded-for", xff.as_str())]).await == 200 {
            others += 1;
        }
    }
    assert_eq!(others, 20);
    assert_eq!(post_join(&s.base, &from("2001:db8:aa:bc::1")).await, 200);

    let stats = s.room_app.room.stats().await.unwrap();
    assert_eq!(stats.waiting, 2 + 2 + 20 + 1);
}
