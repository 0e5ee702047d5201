//! The layer driven through axum routers with `oneshot`.

mod layer_support;

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, Response, StatusCode};
use axum::routing::{get, post};
use axum::{Extension, Router};
use http::request::Parts;
use http_body_util::BodyExt;
use layer_support::*;
use queuegate::layer::{QueueGateLayer, PROBLEM_JSON};
use queuegate::{
    Metrics, Mode, Policy, Rejection, RejectionCode, ReplayMode, ReplayReason, Verified,
};
use tower::{Service, ServiceExt};

async fn browse(Extension(v): Extension<Verified>) -> String {
    format!("browsing as chain {}", v.claims.ticket_id)
}

/// Books; answers 202 (outside the success set, so the hold is kept) when
/// asked with `x-keep-hold`.
async fn reserve(
    Extension(v): Extension<Verified>,
    headers: http::HeaderMap,
) -> (StatusCode, String) {
    let status = if headers.contains_key("x-keep-hold") {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (status, format!("booked for chain {}", v.claims.ticket_id))
}

fn reserve_policy() -> Policy {
    Policy::new(QUEUE)
        .scope("reserve")
        .replay(ReplayMode::SingleUse)
}

/// `/browse` (session), `/reserve` (single use), `/down` (store down), all
/// counting into `fx.metrics`.
fn app(fx: &Fixture) -> Router {
    let browse_layer = QueueGateLayer::builder(fx.verifier(Policy::new(QUEUE)))
        .metrics(fx.metrics.clone())
        .build()
        .unwrap();
    let reserve_layer = QueueGateLayer::builder(fx.verifier(reserve_policy()))
        .metrics(fx.metrics.clone())
        .commit_when(|s| s == StatusCode::OK)
        .build()
        .unwrap();
    let down = fx.verifier_with(
        Policy::new(QUEUE),
        DownStore {
            epoch: queuegate::ReplayStore::epoch(&*fx.store),
        },
    );
    let down_layer = QueueGateLayer::builder(down)
        .metrics(fx.metrics.clone())
        .build()
        .unwrap();
    Router::new()
        .route("/browse", get(browse).layer(browse_layer))
        .route("/reserve", post(reserve).layer(reserve_layer))
        .route("/down", get(browse).layer(down_layer))
}

fn request(r: &Req) -> Request<Body> {
    r.to_http().map(|()| Body::empty())
}

async fn send(app: &Router, r: &Req) -> (Response<Body>, Vec<u8>) {
    let res = app.clone().oneshot(request(r)).await.unwrap();
    let (parts, body) = res.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes().to_vec();
    (Response::from_parts(parts, Body::empty()), bytes)
}

#[tokio::test]
async fn every_rejection_code_end_to_end() {
    let fx = Fixture::new();
    let app = app(&fx);
    let cases = rejection_cases(&fx);
    let mut seen = Vec::new();
    for case in &cases {
        for before in &case.before {
            let (res, _) = send(&app, before).await;
            assert!(res.status().is_success(), "setup of {:?}", case.code);
        }
        fx.clock.advance(case.advance);
        let (res, body) = send(&app, &case.req).await;
        let code = case.code;
        assert_eq!(res.status(), code.status(), "{code:?}");
        assert_eq!(res.headers()[header::CONTENT_TYPE], PROBLEM_JSON);
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["code"], code.as_str());
        assert_eq!(json["status"], code.status().as_u16());
        assert_eq!(
            json["type"],
            format!("urn:queuegate:problem:{}", code.as_str())
        );
        assert_eq!(json["title"], code.title());
        assert!(json["detail"].as_str().is_some_and(|d| !d.is_empty()));
        let retry = res.headers().get(header::RETRY_AFTER);
        let waits = matches!(
            code,
            RejectionCode::NotAdmitted
                | RejectionCode::StoreUnavailable
                | RejectionCode::InProgress
        );
        assert_eq!(retry.is_some(), waits, "Retry-After on {code:?}");
        if let Some(retry) = retry {
            let secs: u64 = retry.to_str().unwrap().parse().unwrap();
            assert!(secs >= 1);
        }
        if !case.ticket.is_empty() {
            let text = String::from_utf8_lossy(&body);
            assert!(!text.contains(&case.ticket), "{code:?} echoes the ticket");
        }
        seen.push(code);
    }
    seen.sort();
    seen.dedup();
    assert_eq!(seen, RejectionCode::ALL, "every code is exercised");

    let snap = fx.metrics.snapshot();
    for code in RejectionCode::ALL {
        assert_eq!(snap.rejections(code), 1, "{code:?} counted once");
        assert_eq!(snap.monitored(code), 0);
    }
    // The successful setup requests of in_progress, replayed,
    // offline_resumed, expired.
    assert_eq!(snap.admissions, 4);
    // Offsets were measured on the skewed and the jumped requests, but both
    // were refused: refused requests never feed the histogram (a waiting
    // bot could move its middle), so it is empty.
    assert_eq!(snap.offset_count, 0);
}

#[tokio::test]
async fn rejection_is_in_the_response_extensions() {
    let fx = Fixture::new();
    let app = app(&fx);
    let res = app
        .clone()
        .oneshot(request(&Req::get("/browse")))
        .await
        .unwrap();
    // axum keeps the extensions of the layer's response.
    assert_eq!(
        res.extensions().get::<Rejection>(),
        Some(&Rejection::Missing)
    );
}

#[tokio::test]
async fn admitted_request_reaches_the_handler_with_its_claims() {
    let fx = Fixture::new();
    let app = app(&fx);
    let t = fx.admitted(SESSION);
    let (res, body) = send(&app, &Req::get("/browse").ticket(&t, SESSION)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body = String::from_utf8(body).unwrap();
    assert!(body.starts_with("browsing as chain "), "{body}");
    // Session mode: the same ticket browses again.
    let (res, _) = send(&app, &Req::get("/browse").ticket(&t, SESSION)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(fx.metrics.snapshot().admissions, 2);
}

#[tokio::test]
async fn two_policies_on_two_routes() {
    let fx = Fixture::new();
    let app = app(&fx);
    let t = fx.admitted(SESSION);
    for _ in 0..3 {
        let (res, _) = send(&app, &Req::get("/browse").ticket(&t, SESSION)).await;
        assert_eq!(res.status(), StatusCode::OK, "browsing is repeatable");
    }
    let (res, body) = send(&app, &Req::post("/reserve").ticket(&t, SESSION)).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert!(String::from_utf8(body).unwrap().starts_with("booked"));
    let (res, body) = send(&app, &Req::post("/reserve").ticket(&t, SESSION)).await;
    assert_eq!(res.status(), StatusCode::CONFLICT, "booking is single use");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], "replayed");
    // Consuming the booking scope does not consume browsing.
    let (res, _) = send(&app, &Req::get("/browse").ticket(&t, SESSION)).await;
    assert_eq!(res.status(), StatusCode::OK);
    // A second ticket of another person books independently.
    let other = fx.admitted("session-7");
    let (res, _) = send(&app, &Req::post("/reserve").ticket(&other, "session-7")).await;
    assert_eq!(res.status(), StatusCode::OK);
    let snap = fx.metrics.snapshot();
    assert_eq!(snap.rejections(RejectionCode::Replayed), 1);
    assert_eq!(snap.admissions, 6);
}

#[tokio::test]
async fn ticket_sources() {
    let fx = Fixture::new();
    let t = fx.admitted(SESSION);
    let plain = Router::new().route(
        "/browse",
        get(browse).layer(QueueGateLayer::new(fx.verifier(Policy::new(QUEUE)))),
    );
    // A ticket in the URL is ignored: missing.
    let uri = format!("/browse?queue_ticket={t}");
    let req = Request::get(uri.as_str())
        .header("cookie", cookie(SESSION))
        .body(Body::empty())
        .unwrap();
    let res = plain.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        res.extensions().get::<Rejection>(),
        Some(&Rejection::Missing)
    );

    // Unless the host opts in.
    let opted = Router::new().route(
        "/browse",
        get(browse).layer(
            QueueGateLayer::builder(fx.verifier(Policy::new(QUEUE)))
                .allow_query_ticket("queue_ticket")
                .unwrap()
                .ticket_cookie("queue_ticket")
                .unwrap()
                .build()
                .unwrap(),
        ),
    );
    let req = Request::get(uri.as_str())
        .header("cookie", cookie(SESSION))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        opted.clone().oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );

    // The ticket in a cookie, next to the session cookie.
    let req = Request::get("/browse")
        .header("cookie", format!("{}; queue_ticket={t}", cookie(SESSION)))
        .body(Body::empty())
        .unwrap();
    assert_eq!(
        opted.clone().oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );

    // Header and cookie that disagree: ambiguous.
    let other = fx.admitted(SESSION);
    let req = Request::get("/browse")
        .header("queue-ticket", &t)
        .header(
            "cookie",
            format!("{}; queue_ticket={other}", cookie(SESSION)),
        )
        .body(Body::empty())
        .unwrap();
    let res = opted.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        res.extensions().get::<Rejection>(),
        Some(&Rejection::Malformed {
            reason: queuegate::MalformedReason::Ambiguous
        })
    );

    // Two ticket headers: ambiguous, even when equal.
    let req = Request::get("/browse")
        .header("queue-ticket", &t)
        .header("queue-ticket", &t)
        .header("cookie", cookie(SESSION))
        .body(Body::empty())
        .unwrap();
    let res = plain.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);

    // A 100 KB ticket: malformed, cheaply.
    let huge = "A".repeat(100 * 1024);
    let req = Request::get("/browse")
        .header("queue-ticket", huge)
        .header("cookie", cookie(SESSION))
        .body(Body::empty())
        .unwrap();
    let res = plain.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn monitor_mode_lets_through_and_counts() {
    let fx = Fixture::new();
    let layer = QueueGateLayer::builder(fx.verifier(Policy::new(QUEUE).mode_all(Mode::Monitor)))
        .metrics(fx.metrics.clone())
        .build()
        .unwrap();
    let app = Router::new().route(
        "/browse",
        get(|parts: Parts| async move {
            let verified = parts.extensions.get::<Verified>().cloned();
            let unverified = parts.extensions.get::<Rejection>().cloned();
            format!(
                "{}|{}",
                verified
                    .and_then(|v| v.monitored)
                    .map_or("-", |r| r.code().as_str()),
                unverified.map_or("-", |r| r.code().as_str())
            )
        })
        .layer(layer),
    );
    let waiting = fx.waiting(SESSION);
    let ok = fx.admitted(SESSION);
    let cases = [
        (Req::get("/browse"), "-|missing"),
        (
            Req::get("/browse").ticket("garbage", SESSION),
            "-|malformed",
        ),
        (
            Req::get("/browse").ticket(&waiting, SESSION),
            "not_admitted|-",
        ),
        (
            Req::get("/browse").ticket(&ok, "thief"),
            "binding_mismatch|-",
        ),
        (Req::get("/browse").ticket(&ok, SESSION), "-|-"),
    ];
    for (req, expected) in &cases {
        let (res, body) = send(&app, req).await;
        assert_eq!(res.status(), StatusCode::OK, "monitor mode lets through");
        assert_eq!(String::from_utf8(body).unwrap(), *expected);
    }
    let snap = fx.metrics.snapshot();
    assert_eq!(snap.admissions, 5);
    assert_eq!(snap.rejections_total(), 0);
    assert_eq!(snap.monitored(RejectionCode::Missing), 1);
    assert_eq!(snap.monitored(RejectionCode::Malformed), 1);
    assert_eq!(snap.monitored(RejectionCode::NotAdmitted), 1);
    assert_eq!(snap.monitored(RejectionCode::BindingMismatch), 1);
    assert_eq!(snap.monitored_total(), 4);
}

#[tokio::test]
async fn clock_evidence_monitored_while_the_rest_is_enforced() {
    let fx = Fixture::new();
    let policy = Policy::new(QUEUE)
        .max_skew(Duration::from_secs(60))
        .mode_for(RejectionCode::ClockSkew, Mode::Monitor)
        .mode_for(RejectionCode::ClockJump, Mode::Monitor);
    let layer = QueueGateLayer::builder(fx.verifier(policy))
        .metrics(fx.metrics.clone())
        .build()
        .unwrap();
    let app = Router::new().route("/browse", get(browse).layer(layer));
    let t = fx.admitted(SESSION);
    let skewed = Req::get("/browse")
        .ticket(&t, SESSION)
        .header("queue-client-time", (T0 - 240_000).to_string());
    let (res, _) = send(&app, &skewed).await;
    assert_eq!(res.status(), StatusCode::OK, "clock_skew is only watched");
    let thief = Req::get("/browse")
        .ticket(&t, "thief")
        .header("queue-client-time", T0.to_string());
    let (res, _) = send(&app, &thief).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "binding is enforced");
    let snap = fx.metrics.snapshot();
    assert_eq!(snap.monitored(RejectionCode::ClockSkew), 1);
    assert_eq!(snap.rejections(RejectionCode::BindingMismatch), 1);
    // The monitored request passed and is observed (-4 min); the thief's
    // was refused and is not.
    assert_eq!(snap.offset_count, 1);
    assert_eq!(snap.offset_sum_ms, -240_000);
    assert_eq!(snap.offset_buckets[2], 1, "-4 min is in (-5 min, -1 min]");
}

#[tokio::test]
async fn hooks_replace_the_response_and_see_admissions() {
    let fx = Fixture::new();
    let admitted = Arc::new(AtomicUsize::new(0));
    let seen = admitted.clone();
    let layer = QueueGateLayer::builder(fx.verifier(reserve_policy()))
        .metrics(fx.metrics.clone())
        .on_admit(move |v: &Verified, parts: &Parts| {
            assert_eq!(parts.uri.path(), "/reserve");
            assert!(v.claims.is_admitted());
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .on_reject(|r: &Rejection, parts: &Parts| -> Option<Response<Body>> {
            match r {
                Rejection::Missing => Some(
                    Response::builder()
                        .status(StatusCode::SEE_OTHER)
                        .header(header::LOCATION, "/queue")
                        .body(Body::empty())
                        .unwrap(),
                ),
                Rejection::Replayed {
                    reason: ReplayReason::ConsumedBySameClient,
                    ticket_id,
                } => {
                    assert_eq!(parts.method, http::Method::POST);
                    Some(Response::new(Body::from(format!(
                        "booked for chain {ticket_id}"
                    ))))
                }
                _ => None,
            }
        })
        .build()
        .unwrap();
    let app = Router::new().route("/reserve", post(reserve).layer(layer));

    let (res, _) = send(&app, &Req::post("/reserve")).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[header::LOCATION], "/queue");
    assert_eq!(
        res.extensions().get::<Rejection>(),
        Some(&Rejection::Missing)
    );

    let t = fx.admitted(SESSION);
    let (first, first_body) = send(&app, &Req::post("/reserve").ticket(&t, SESSION)).await;
    assert_eq!(first.status(), StatusCode::OK);
    // The response was lost; the same person retries: the booking already
    // made, not an error.
    let (retry, retry_body) = send(&app, &Req::post("/reserve").ticket(&t, SESSION)).await;
    assert_eq!(retry.status(), StatusCode::OK);
    assert_eq!(retry_body, first_body);
    assert!(matches!(
        retry.extensions().get::<Rejection>(),
        Some(Rejection::Replayed {
            reason: ReplayReason::ConsumedBySameClient,
            ..
        })
    ));
    // Other rejections keep the default response.
    let w = fx.waiting(SESSION);
    let (res, _) = send(&app, &Req::post("/reserve").ticket(&w, SESSION)).await;
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(res.headers()[header::CONTENT_TYPE], PROBLEM_JSON);

    assert_eq!(admitted.load(Ordering::SeqCst), 1);
    let snap = fx.metrics.snapshot();
    // A replaced response is still a rejection.
    assert_eq!(snap.rejections(RejectionCode::Missing), 1);
    assert_eq!(snap.rejections(RejectionCode::Replayed), 1);
}

#[tokio::test]
async fn host_hooks_for_binding_and_client_time() {
    fn from_header(parts: &Parts) -> Option<std::borrow::Cow<'_, [u8]>> {
        parts
            .headers
            .get("x-device")
            .map(|v| std::borrow::Cow::Borrowed(v.as_bytes()))
    }
    fn from_authorization(parts: &Parts) -> Result<Option<&[u8]>, Rejection> {
        match parts.headers.get(header::AUTHORIZATION) {
            None => Ok(None),
            Some(v) => match v.as_bytes().strip_prefix(b"Queue ") {
                Some(t) => Ok(Some(t)),
                None => Err(Rejection::Malformed {
                    reason: queuegate::MalformedReason::Encoding,
                }),
            },
        }
    }
    let fx = Fixture::new();
    let layer = QueueGateLayer::builder(fx.verifier(Policy::new(QUEUE)))
        .ticket_source(from_authorization)
        .binding(from_header)
        .client_time(|_: &Parts| queuegate::ClientTime::Millis(T0 + 3_600_000))
        .metrics(fx.metrics.clone())
        .build()
        .unwrap();
    let app = Router::new().route("/browse", get(browse).layer(layer));
    let t = fx.admitted(SESSION);
    let req = Req::get("/browse")
        .header("authorization", format!("Queue {t}"))
        .header("x-device", SESSION);
    let (res, body) = send(&app, &req).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], "clock_skew", "the host's clock hook is used");
    assert!(json["detail"].as_str().unwrap().contains("1 hour off"));
    // The default header is not read any more.
    let req = Req::get("/browse")
        .header("queue-ticket", t.clone())
        .header("x-device", SESSION);
    let (_, body) = send(&app, &req).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["code"], "missing");
    let req = Req::get("/browse")
        .header("authorization", format!("Bearer {t}"))
        .header("x-device", SESSION);
    let (res, _) = send(&app, &req).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn replay_through_an_async_store() {
    let fx = Fixture::new();
    let slow = fx.verifier_with(reserve_policy(), SlowStore(fx.store.clone()));
    let layer = QueueGateLayer::builder(slow)
        .metrics(fx.metrics.clone())
        .build()
        .unwrap();
    let app = Router::new().route("/reserve", post(reserve).layer(layer));
    let t = fx.admitted(SESSION);
    let (res, _) = send(&app, &Req::post("/reserve").ticket(&t, SESSION)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (res, _) = send(&app, &Req::post("/reserve").ticket(&t, SESSION)).await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
}

/// A service that is not ready until opened, counting its calls.
#[derive(Clone)]
struct Gated {
    open: Arc<std::sync::atomic::AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Service<Request<Body>> for Gated {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if self.open.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn call(&mut self, _: Request<Body>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::SeqCst);
        std::future::ready(Ok(Response::new(Body::from("inner"))))
    }
}

#[tokio::test]
async fn readiness_is_passed_through() {
    use tower::Layer;
    let fx = Fixture::new();
    let gated = Gated {
        open: Arc::default(),
        calls: Arc::default(),
    };
    let mut svc = QueueGateLayer::new(fx.verifier(Policy::new(QUEUE))).layer(gated.clone());
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(svc.poll_ready(&mut cx).is_pending(), "inner not ready");
    gated.open.store(true, Ordering::SeqCst);
    assert!(matches!(svc.poll_ready(&mut cx), Poll::Ready(Ok(()))));
    let t = fx.admitted(SESSION);
    let res = svc
        .call(request(&Req::get("/x").ticket(&t, SESSION)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(gated.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrency_limit_holds_through_the_store_await() {
    use tower::limit::ConcurrencyLimitLayer;
    use tower::ServiceBuilder;
    let fx = Fixture::new();
    let slow = fx.verifier_with(Policy::new(QUEUE), SlowStore(fx.store.clone()));
    let mut svc = ServiceBuilder::new()
        .layer(QueueGateLayer::new(slow))
        .layer(ConcurrencyLimitLayer::new(1))
        .service_fn(|_: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::from("inner")))
        });
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(svc.poll_ready(&mut cx).is_ready());
    let t = fx.admitted(SESSION);
    let mut first = Box::pin(svc.call(request(&Req::get("/x").ticket(&t, SESSION))));
    // The first request waits on the store, holding the only permit.
    assert!(first.as_mut().poll(&mut cx).is_pending());
    assert!(
        svc.poll_ready(&mut cx).is_pending(),
        "the limit's permit travelled with the in-flight request"
    );
    let res = first.await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert!(svc.poll_ready(&mut cx).is_ready(), "permit released");
}

#[tokio::test]
async fn prometheus_text_after_traffic() {
    let fx = Fixture::new();
    let app = app(&fx);
    let t = fx.admitted(SESSION);
    send(&app, &Req::get("/browse").ticket(&t, SESSION)).await;
    send(&app, &Req::get("/browse")).await;
    send(&app, &Req::get("/browse")).await;
    let text = fx.metrics.render_prometheus();
    assert!(text.contains("queuegate_admissions_total 1\n"));
    assert!(text.contains("queuegate_rejections_total{code=\"missing\"} 2\n"));
    assert!(text.contains("queuegate_rejections_total{code=\"replayed\"} 0\n"));
}

#[test]
fn bad_settings_fail_at_setup() {
    let fx = Fixture::new();
    let v = || fx.verifier(Policy::new(QUEUE));
    assert!(QueueGateLayer::builder(v())
        .ticket_header("bad header")
        .is_err());
    assert!(QueueGateLayer::builder(v()).ticket_cookie("a;b").is_err());
    assert!(QueueGateLayer::builder(v()).binding_cookie("").is_err());
    assert!(QueueGateLayer::builder(v())
        .client_time_header("x y")
        .is_err());
    assert!(QueueGateLayer::builder(v())
        .allow_query_ticket("a=b")
        .is_err());
    let _: Metrics = QueueGateLayer::new(v()).metrics().clone();
}

#[cfg(feature = "axum")]
#[tokio::test]
async fn axum_extractor() {
    use queuegate::layer::QueueTicket;
    let fx = Fixture::new();
    let protected = Router::new()
        .route(
            "/browse",
            get(|QueueTicket(v): QueueTicket| async move { v.claims.ticket_id.to_string() })
                .layer(QueueGateLayer::new(fx.verifier(Policy::new(QUEUE)))),
        )
        .route(
            "/forgot",
            get(|QueueTicket(v): QueueTicket| async move { v.claims.ticket_id.to_string() }),
        )
        .route(
            "/optional",
            get(|t: Option<QueueTicket>| async move { t.is_some().to_string() }),
        );
    let t = fx.admitted(SESSION);
    let (res, _) = send(&protected, &Req::get("/browse").ticket(&t, SESSION)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let (res, body) = send(&protected, &Req::get("/forgot").ticket(&t, SESSION)).await;
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert!(String::from_utf8(body)
        .unwrap()
        .contains("is QueueGateLayer installed"));
    let (res, body) = send(&protected, &Req::get("/optional")).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(body, b"false");
}

#[tokio::test]
async fn redirect_to_queue_for_page_navigations() {
    use queuegate::layer::RedirectToQueue;
    let fx = Fixture::new();
    let layer = QueueGateLayer::builder(fx.verifier(Policy::new(QUEUE)))
        .on_reject(RedirectToQueue::new("/queue").unwrap())
        .build()
        .unwrap();
    let app = Router::new().route("/browse", get(browse).layer(layer));
    let page = Req::get("/browse").header("accept", "text/html");
    let (res, _) = send(&app, &page).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[header::LOCATION], "/queue");
    let (res, _) = send(&app, &Req::get("/browse")).await;
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "API calls get the problem"
    );
}
