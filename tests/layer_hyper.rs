//! The layer in a real hyper 1.x server on 127.0.0.1 (ephemeral port),
//! driven by a real HTTP/1.1 client over TCP.

mod layer_support;

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::request::Parts;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use layer_support::*;
use queuegate::layer::{QueueGateLayer, PROBLEM_JSON};
use queuegate::{Mode, Policy, Rejection, RejectionCode, ReplayMode, ReplayStore, Verified};
use tower::{ServiceBuilder, ServiceExt};

async fn handler(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = match req.extensions().get::<Verified>() {
        Some(v) => format!("admitted {}", v.claims.ticket_id),
        None => "no ticket".to_owned(),
    };
    let mut res = Response::new(Full::new(Bytes::from(text)));
    if req.headers().contains_key("x-keep-hold") {
        // Outside `/reserve`'s success set (200): the hold is kept.
        *res.status_mut() = StatusCode::ACCEPTED;
    }
    Ok(res)
}

/// Serves `/browse`, `/reserve` and `/down` (see `rejection_cases`) until
/// the test ends; returns the address.
async fn serve(fx: &Fixture) -> SocketAddr {
    let layer = |policy| {
        QueueGateLayer::builder(fx.verifier(policy))
            .metrics(fx.metrics.clone())
            .build()
            .unwrap()
    };
    let browse = ServiceBuilder::new()
        .layer(layer(Policy::new(QUEUE)))
        .service_fn(handler);
    let reserve = ServiceBuilder::new()
        .layer(
            QueueGateLayer::builder(
                fx.verifier(
                    Policy::new(QUEUE)
                        .scope("reserve")
                        .replay(ReplayMode::SingleUse),
                ),
            )
            .metrics(fx.metrics.clone())
            .commit_when(|s| s == StatusCode::OK)
            .build()
            .unwrap(),
        )
        .service_fn(handler);
    let down_verifier = fx.verifier_with(
        Policy::new(QUEUE),
        DownStore {
            epoch: fx.store.epoch(),
        },
    );
    let down = ServiceBuilder::new()
        .layer(
            QueueGateLayer::builder(down_verifier)
                .metrics(fx.metrics.clone())
                .build()
                .unwrap(),
        )
        .service_fn(handler);

    // `/watch`: everything monitored. `/hooked`: a missing ticket is sent
    // to the queue page.
    let watch = ServiceBuilder::new()
        .layer(layer(Policy::new(QUEUE).mode_all(Mode::Monitor)))
        .service_fn(handler);
    let hooked = ServiceBuilder::new()
        .layer(
            QueueGateLayer::builder(fx.verifier(Policy::new(QUEUE)))
                .metrics(fx.metrics.clone())
                .on_reject(
                    |r: &Rejection, _: &Parts| -> Option<Response<Full<Bytes>>> {
                        matches!(r, Rejection::Missing).then(|| {
                            Response::builder()
                                .status(StatusCode::SEE_OTHER)
                                .header("location", "/queue")
                                .body(Full::new(Bytes::new()))
                                .unwrap()
                        })
                    },
                )
                .build()
                .unwrap(),
        )
        .service_fn(handler);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let services = (
                browse.clone(),
                reserve.clone(),
                down.clone(),
                watch.clone(),
                hooked.clone(),
            );
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let (browse, reserve, down, watch, hooked) = services.clone();
                async move {
                    match req.uri().path() {
                        "/reserve" => reserve.oneshot(req).await,
                        "/down" => down.oneshot(req).await,
                        "/watch" => watch.oneshot(req).await,
                        "/hooked" => hooked.oneshot(req).await,
                        _ => browse.oneshot(req).await,
                    }
                }
            });
            tokio::spawn(async move {
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    addr
}

struct Client {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
}

impl Client {
    async fn connect(addr: SocketAddr) -> Self {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self { sender }
    }

    async fn send(&mut self, r: &Req) -> (Response<()>, Vec<u8>) {
        let req = r.to_http().map(|()| Empty::<Bytes>::new());
        self.sender.ready().await.unwrap();
        let res = self.sender.send_request(req).await.unwrap();
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes().to_vec();
        (Response::from_parts(parts, ()), body)
    }
}

#[tokio::test]
async fn every_rejection_code_over_tcp() {
    let fx = Fixture::new();
    let addr = serve(&fx).await;
    let mut client = Client::connect(addr).await;
    let cases = rejection_cases(&fx);
    for case in &cases {
        for before in &case.before {
            let (res, _) = client.send(before).await;
            assert!(res.status().is_success(), "setup of {:?}", case.code);
        }
        fx.clock.advance(case.advance);
        let (res, body) = client.send(&case.req).await;
        let code = case.code;
        assert_eq!(res.status(), code.status(), "{code:?}");
        assert_eq!(res.headers()["content-type"], PROBLEM_JSON);
        assert_eq!(res.headers()["cache-control"], "no-store");
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["code"], code.as_str());
        let waits = matches!(
            code,
            RejectionCode::NotAdmitted
                | RejectionCode::StoreUnavailable
                | RejectionCode::InProgress
        );
        assert_eq!(res.headers().contains_key("retry-after"), waits, "{code:?}");
        if !case.ticket.is_empty() {
            let text = String::from_utf8_lossy(&body);
            assert!(!text.contains(&case.ticket), "{code:?} echoes the ticket");
        }
    }
    let snap = fx.metrics.snapshot();
    for code in RejectionCode::ALL {
        assert_eq!(snap.rejections(code), 1, "{code:?}");
    }
}

#[tokio::test]
async fn admitted_over_tcp_and_oversized_ticket() {
    let fx = Fixture::new();
    let addr = serve(&fx).await;
    let mut client = Client::connect(addr).await;
    let t = fx.admitted(SESSION);
    let (res, body) = client.send(&Req::get("/browse").ticket(&t, SESSION)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(String::from_utf8(body).unwrap().starts_with("admitted "));

    let (res, _) = client
        .send(&Req::post("/reserve").ticket(&t, SESSION))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let (res, _) = client
        .send(&Req::post("/reserve").ticket(&t, SESSION))
        .await;
    assert_eq!(res.status(), StatusCode::CONFLICT);

    // 100 KB of garbage in the ticket header: refused as malformed.
    let huge = "x".repeat(100 * 1024);
    let (res, body) = client
        .send(&Req::get("/browse").ticket(&huge, SESSION))
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], "malformed");
    assert!(
        body.len() < 1024,
        "the response does not grow with the input"
    );
    let snap = fx.metrics.snapshot();
    assert_eq!(snap.admissions, 2);
    assert_eq!(snap.rejections(RejectionCode::Malformed), 1);
    assert_eq!(snap.rejections(RejectionCode::Replayed), 1);
}

#[tokio::test]
async fn monitor_mode_and_hooks_over_tcp() {
    let fx = Fixture::new();
    let addr = serve(&fx).await;
    let mut client = Client::connect(addr).await;

    // Monitor mode: no ticket, garbage, a waiting ticket all reach the
    // service, and are counted as would-be rejections.
    let waiting = fx.waiting(SESSION);
    let (res, body) = client.send(&Req::get("/watch")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body, b"no ticket");
    let (res, _) = client
        .send(&Req::get("/watch").ticket("garbage", SESSION))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let (res, body) = client
        .send(&Req::get("/watch").ticket(&waiting, SESSION))
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(String::from_utf8(body).unwrap().starts_with("admitted "));

    // The hook answers a missing ticket with a redirect; other rejections
    // keep the default problem document.
    let (res, _) = client.send(&Req::get("/hooked")).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()["location"], "/queue");
    let (res, _) = client
        .send(&Req::get("/hooked").ticket(&waiting, SESSION))
        .await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()["content-type"], PROBLEM_JSON);

    let snap = fx.metrics.snapshot();
    assert_eq!(snap.admissions, 3);
    assert_eq!(snap.monitored(RejectionCode::Missing), 1);
    assert_eq!(snap.monitored(RejectionCode::Malformed), 1);
    assert_eq!(snap.monitored(RejectionCode::NotAdmitted), 1);
    assert_eq!(snap.rejections(RejectionCode::Missing), 1);
    assert_eq!(snap.rejections(RejectionCode::NotAdmitted), 1);
    assert_eq!(snap.rejections_total(), 2);
}
