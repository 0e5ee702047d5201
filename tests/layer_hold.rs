//! Issue 12 item 3: a failed booking must not use up the turn. A
//! `single_use` route takes a hold on the chain, and the handler's answer
//! settles it: a success commits, a declared side-effect-free refusal
//! releases at once, anything else (a 5xx, a timeout, a client that went
//! away) keeps the hold until it expires and then lets the same client
//! retry. Every scenario runs on the memory store and on Redis, through
//! the real layer around an axum router, and counts bookings.

mod adversary;

use std::collections::VecDeque;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, Response, StatusCode};
use axum::routing::post;
use axum::{Extension, Router};
use http_body_util::BodyExt;
use queuegate::layer::{NoSideEffects, QueueGateLayer};
use queuegate::{
    Clock, ManualClock, MemoryReplayStore, Policy, ReplayMode, ReplayStore, SystemClock, Verified,
    Verifier,
};
use tower::{Service, ServiceExt};

use adversary::*;

/// What the booking handler does on its next call.
#[derive(Debug, Clone, Copy)]
enum Act {
    /// Books and answers 200.
    Book,
    /// "Slot taken": 409, declared free of side effects.
    SlotTaken,
    /// A database error: 500, nothing booked (the layer cannot know).
    Fail,
    /// Never answers (a stuck upload, a hung database).
    Hang,
    /// Waits, then books.
    Slow(Duration),
}

#[derive(Default)]
struct Desk {
    script: Mutex<VecDeque<Act>>,
    bookings: Mutex<Vec<String>>,
    calls: Mutex<usize>,
}

impl Desk {
    fn new(script: &[Act]) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(script.iter().copied().collect()),
            ..Self::default()
        })
    }
    fn bookings(&self) -> usize {
        self.bookings.lock().unwrap().len()
    }
    fn calls(&self) -> usize {
        *self.calls.lock().unwrap()
    }
}

async fn book(State(desk): State<Arc<Desk>>, Extension(v): Extension<Verified>) -> Response<Body> {
    *desk.calls.lock().unwrap() += 1;
    let act = desk.script.lock().unwrap().pop_front().unwrap_or(Act::Book);
    let key = v
        .idempotency_key
        .expect("a single_use route has a key")
        .to_string();
    let booked = |desk: &Desk| {
        desk.bookings.lock().unwrap().push(key.clone());
        Response::new(Body::from("booked"))
    };
    match act {
        Act::Book => booked(&desk),
        Act::SlotTaken => {
            let mut r = Response::new(Body::from("slot taken"));
            *r.status_mut() = StatusCode::CONFLICT;
            r.extensions_mut().insert(NoSideEffects);
            r
        }
        Act::Fail => {
            let mut r = Response::new(Body::from("database error"));
            *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            r
        }
        Act::Hang => std::future::pending().await,
        Act::Slow(d) => {
            tokio::time::sleep(d).await;
            booked(&desk)
        }
    }
}

const HOLD: Duration = Duration::from_millis(1_500);
const TIMEOUT: Duration = Duration::from_millis(1_000);

fn policy() -> Policy {
    Policy::new(QUEUE)
        .scope("reserve")
        .replay(ReplayMode::SingleUse)
        .hold(HOLD)
        .handler_timeout(TIMEOUT)
}

fn router<C: Clock, S: ReplayStore>(verifier: Verifier<C, S>, desk: Arc<Desk>) -> Router {
    let layer = QueueGateLayer::builder(verifier).build().unwrap();
    Router::new()
        .route("/reserve", post(book).layer(layer))
        .with_state(desk)
}

fn request(ticket: &str) -> Request<Body> {
    Request::post("/reserve")
        .header("queue-ticket", ticket)
        .header("cookie", "qg_session=me")
        .body(Body::empty())
        .unwrap()
}

/// Status, `code` of a problem document (if any), `Retry-After` (if any).
async fn send(app: &Router, ticket: &str) -> (u16, String, Option<String>) {
    let res = app.clone().oneshot(request(ticket)).await.unwrap();
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
    (status, code, retry)
}

/// A setup over `store`: a manual clock at the wall-clock time (Redis
/// keeps records on its own clock), one admitted person.
struct Env<S: ReplayStore> {
    f: Fixture<S>,
    ticket: String,
}

fn env<S: ReplayStore>(store: Arc<S>) -> Env<S> {
    let f = Fixture::new(store, policy(), ManualClock::new(SystemClock.now_ms()));
    let ticket = f.join(b"me", &admit_now(Duration::from_secs(600))).ticket;
    Env { f, ticket }
}

/// Lets a spawned settlement (Redis) land.
async fn settle_lands() {
    tokio::time::sleep(Duration::from_millis(150)).await;
}

async fn slot_taken_releases_at_once<S: ReplayStore>(store: Arc<S>) {
    let e = env(store);
    let desk = Desk::new(&[Act::SlotTaken, Act::Book]);
    let app = router(e.f.verifier.clone(), desk.clone());
    assert_eq!(
        send(&app, &e.ticket).await.0,
        409,
        "the handler's own refusal"
    );
    // Retried at once, with no time passing: the hold was released.
    let (status, body, _) = send(&app, &e.ticket).await;
    assert_eq!((status, body.as_str()), (200, "booked"));
    let (status, code, _) = send(&app, &e.ticket).await;
    assert_eq!((status, code.as_str()), (409, "replayed"));
    assert_eq!(desk.bookings(), 1);
    assert_eq!(desk.calls(), 2);
}

async fn server_error_keeps_the_hold_until_it_expires<S: ReplayStore>(store: Arc<S>) {
    let e = env(store);
    let desk = Desk::new(&[Act::Fail, Act::Book]);
    let app = router(e.f.verifier.clone(), desk.clone());
    assert_eq!(send(&app, &e.ticket).await.0, 500);
    // The layer cannot know whether the failed attempt did anything: the
    // retry waits for the hold, and is told how long.
    let (status, code, retry) = send(&app, &e.ticket).await;
    assert_eq!((status, code.as_str()), (409, "in_progress"));
    assert_eq!(retry.as_deref(), Some("2"), "1.5 s rounded up");
    assert_eq!(desk.calls(), 1);
    e.f.clock.advance(HOLD);
    let (status, body, _) = send(&app, &e.ticket).await;
    assert_eq!((status, body.as_str()), (200, "booked"));
    assert_eq!(send(&app, &e.ticket).await.1, "replayed");
    assert_eq!(desk.bookings(), 1);
}

/// The client goes away while the handler runs (a dropped upload): the
/// response future is dropped. The hold stays; after it, the same person
/// books once.
async fn client_gone_mid_handler_retries_after_the_hold<S: ReplayStore>(store: Arc<S>) {
    let e = env(store);
    let desk = Desk::new(&[Act::Hang, Act::Book]);
    let app = router(e.f.verifier.clone(), desk.clone());
    let mut svc = app.clone();
    let fut = ServiceExt::<Request<Body>>::ready(&mut svc)
        .await
        .unwrap()
        .call(request(&e.ticket));
    // Drive it until the handler runs, then drop it.
    let mut fut = Box::pin(fut);
    let started = tokio::time::timeout(Duration::from_secs(5), async {
        while desk.calls() == 0 {
            std::future::poll_fn(|cx: &mut Context<'_>| {
                let _ = fut.as_mut().poll(cx);
                Poll::Ready(())
            })
            .await;
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(started.is_ok(), "the handler started");
    drop(fut);
    let (status, code, _) = send(&app, &e.ticket).await;
    assert_eq!((status, code.as_str()), (409, "in_progress"));
    e.f.clock.advance(HOLD);
    assert_eq!(send(&app, &e.ticket).await.0, 200);
    assert_eq!(send(&app, &e.ticket).await.1, "replayed");
    assert_eq!(desk.bookings(), 1);
}

/// The handler books, and the response future is dropped right after (the
/// client went away as the answer was sent): the commit stands, and no
/// second booking gets through, even long after the hold.
async fn committed_then_dropped_never_books_twice<S: ReplayStore>(store: Arc<S>) {
    let e = env(store);
    let desk = Desk::new(&[Act::Book, Act::Book, Act::Book]);
    let app = router(e.f.verifier.clone(), desk.clone());
    let mut svc = app.clone();
    let fut = ServiceExt::<Request<Body>>::ready(&mut svc)
        .await
        .unwrap()
        .call(request(&e.ticket));
    let mut fut = Box::pin(fut);
    // Poll until the handler has booked; drop at the first poll after
    // that (for Redis the commit is then in flight).
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let ready = std::future::poll_fn(|cx: &mut Context<'_>| {
                Poll::Ready(fut.as_mut().poll(cx).is_ready())
            })
            .await;
            if ready || desk.bookings() == 1 {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(done.is_ok());
    drop(fut);
    assert_eq!(desk.bookings(), 1);
    settle_lands().await;
    for _ in 0..3 {
        e.f.clock.advance(HOLD * 2);
        let (status, code, _) = send(&app, &e.ticket).await;
        assert_eq!((status, code.as_str()), (409, "replayed"));
    }
    assert_eq!(desk.bookings(), 1);
}

/// A handler slower than the hold: the layer ends it at its timeout (which
/// the hold outlasts), so no retry can run beside it, and the ended
/// handler never books. Real time on both sides (the verifier's clock is
/// the system's).
async fn slow_handler_cannot_be_overtaken<S: ReplayStore>(store: Arc<S>) {
    let e = env(store.clone());
    let desk = Desk::new(&[Act::Slow(Duration::from_millis(2_500)), Act::Book]);
    let verifier = Verifier::new(keys(), policy(), SystemClock, store).unwrap();
    let app = router(verifier, desk.clone());
    let start = tokio::time::Instant::now();
    let first = tokio::spawn({
        let app = app.clone();
        let ticket = e.ticket.clone();
        async move { send(&app, &ticket).await }
    });
    // While it runs, and after it timed out but before the hold ends:
    // refused, never a second handler.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(send(&app, &e.ticket).await.1, "in_progress");
    let (status, code, _) = first.await.unwrap();
    assert_eq!((status, code.as_str()), (409, "in_progress"), "timed out");
    assert!(start.elapsed() >= TIMEOUT);
    if start.elapsed() < HOLD - Duration::from_millis(100) {
        assert_eq!(send(&app, &e.ticket).await.1, "in_progress");
    }
    assert_eq!(desk.calls(), 1);
    tokio::time::sleep_until(start + HOLD + Duration::from_millis(100)).await;
    assert_eq!(send(&app, &e.ticket).await.0, 200);
    // Long past the slow handler's own finishing time: it was ended.
    tokio::time::sleep_until(start + Duration::from_millis(3_000)).await;
    assert_eq!(desk.bookings(), 1);
    assert_eq!(send(&app, &e.ticket).await.1, "replayed");
}

/// Two uses at once: one booking, one `in_progress` with `Retry-After`.
async fn two_at_once_one_booking_one_in_progress<S: ReplayStore>(store: Arc<S>) {
    let e = env(store);
    let slow = Act::Slow(Duration::from_millis(200));
    let desk = Desk::new(&[slow, slow]);
    let app = router(e.f.verifier.clone(), desk.clone());
    let (a, b) = tokio::join!(send(&app, &e.ticket), send(&app, &e.ticket));
    let mut answers = [(a.0, a.1, a.2.is_some()), (b.0, b.1, b.2.is_some())];
    answers.sort();
    assert_eq!(
        answers,
        [
            (200, "booked".to_owned(), false),
            (409, "in_progress".to_owned(), true)
        ]
    );
    assert_eq!(desk.bookings(), 1);
    settle_lands().await;
    assert_eq!(send(&app, &e.ticket).await.1, "replayed");
}

/// Same-client identity of a held or consumed chain survives a signing-key
/// rotation: the renewed ticket's binding bytes differ (another key), but
/// its binding check passes, so the retry is the same person.
async fn same_client_across_a_key_rotation<S: ReplayStore>(store: Arc<S>) {
    use queuegate::{Issuer, KeyRing, Rejection, ReplayReason, Settlement};
    let e = env(store.clone());
    let new_secret = [0x77u8; 32];
    let rotated = Arc::new(
        KeyRing::builder()
            .verify_only_key(KEY_ID, &SECRET)
            .unwrap()
            .signing_key(2, &new_secret)
            .unwrap()
            .build()
            .unwrap(),
    );
    let issuer = Issuer::new(rotated.clone(), policy(), e.f.clock.clone(), store.clone()).unwrap();
    let verifier = Verifier::new(rotated, policy(), e.f.clock.clone(), store).unwrap();
    // A booking starts under the old key and fails (its hold is kept).
    let first = verifier.verify(&presented(&e.ticket, b"me")).await.unwrap();
    // The rotation: the next heartbeat is signed, and bound, by key 2.
    let old = issuer.check(&presented(&e.ticket, b"me")).unwrap();
    let renewed = issuer
        .renew(&old, b"me", &admit_now(Duration::from_secs(600)))
        .await
        .unwrap();
    assert_eq!(renewed.claims.key_id, 2);
    assert_ne!(renewed.claims.binding, old.claims.binding);
    // While held: in progress (not "someone else").
    let r = verifier.verify(&presented(&renewed.ticket, b"me")).await;
    assert_eq!(r.unwrap_err().code(), queuegate::RejectionCode::InProgress);
    // After the hold: the same person retries with the new ticket, books.
    e.f.clock.advance(HOLD);
    let retry = verifier
        .verify(&presented(&renewed.ticket, b"me"))
        .await
        .expect("the same client across the rotation");
    verifier
        .settle(&retry, Settlement::Commit)
        .unwrap()
        .await
        .unwrap();
    // A late release of the first attempt changes nothing.
    verifier
        .settle(&first, Settlement::Release)
        .unwrap()
        .await
        .unwrap();
    // A lost answer retried: the same client, so the host can answer with
    // the booking already made.
    assert_eq!(
        verifier
            .verify(&presented(&renewed.ticket, b"me"))
            .await
            .unwrap_err(),
        Rejection::Replayed {
            reason: ReplayReason::ConsumedBySameClient,
            ticket_id: renewed.claims.ticket_id,
        }
    );
}

macro_rules! scenarios {
    ($store:expr $(, #[$attr:meta])*) => {
        #[tokio::test]
        $(#[$attr])*
        async fn slot_taken_releases_at_once() {
            super::slot_taken_releases_at_once($store).await
        }
        #[tokio::test]
        $(#[$attr])*
        async fn server_error_keeps_the_hold_until_it_expires() {
            super::server_error_keeps_the_hold_until_it_expires($store).await
        }
        #[tokio::test]
        $(#[$attr])*
        async fn client_gone_mid_handler_retries_after_the_hold() {
            super::client_gone_mid_handler_retries_after_the_hold($store).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn committed_then_dropped_never_books_twice() {
            super::committed_then_dropped_never_books_twice($store).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn slow_handler_cannot_be_overtaken() {
            super::slow_handler_cannot_be_overtaken($store).await
        }
        #[tokio::test]
        $(#[$attr])*
        async fn same_client_across_a_key_rotation() {
            super::same_client_across_a_key_rotation($store).await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        $(#[$attr])*
        async fn two_at_once_one_booking_one_in_progress() {
            super::two_at_once_one_booking_one_in_progress($store).await
        }
    };
}

mod memory {
    use super::*;
    scenarios!(Arc::new(MemoryReplayStore::new()));
}

#[cfg(feature = "redis")]
mod redis {
    use super::*;
    use queuegate::replay::RedisReplayStore;

    /// A store under a fresh prefix (keys expire with their tickets).
    /// FAILS when Redis is absent.
    async fn store() -> Arc<RedisReplayStore> {
        let prefix = format!("qg-hold-{}", queuegate::TicketId::random());
        Arc::new(
            RedisReplayStore::builder("redis://127.0.0.1:6379/")
                .prefix(&prefix)
                .connect()
                .await
                .expect("this test needs Redis on 127.0.0.1:6379"),
        )
    }

    scenarios!(store().await, #[ignore = "needs Redis"]);
}

/// Issue 12 item 9: monitoring `missing`, `replayed` or `in_progress` on a
/// `single_use` scope is refused unless the host opts in.
#[test]
fn monitor_on_single_use_needs_an_explicit_opt_in() {
    use queuegate::{ConfigError, Mode, RejectionCode};
    for code in [
        RejectionCode::Missing,
        RejectionCode::Replayed,
        RejectionCode::InProgress,
    ] {
        let watching = policy().mode_for(code, Mode::Monitor);
        assert_eq!(
            watching.validate(),
            Err(ConfigError::MonitorSingleUse(code.as_str())),
            "{code}"
        );
        let store = Arc::new(MemoryReplayStore::new());
        assert!(Verifier::new(keys(), watching.clone(), SystemClock, store.clone()).is_err());
        let opted = watching.allow_monitor_on_single_use(true);
        assert_eq!(opted.validate(), Ok(()), "{code}");
        assert!(Verifier::new(keys(), opted, SystemClock, store).is_ok());
        // In a session scope it is an ordinary choice.
        assert_eq!(
            Policy::new(QUEUE).mode_for(code, Mode::Monitor).validate(),
            Ok(())
        );
    }
    // Other codes stay monitorable without the opt-in; failing open stays
    // refused even with it.
    assert!(policy()
        .mode_for(RejectionCode::ClockSkew, Mode::Monitor)
        .validate()
        .is_ok());
    assert_eq!(
        policy()
            .allow_monitor_on_single_use(true)
            .mode_for(RejectionCode::StoreUnavailable, Mode::Monitor)
            .validate(),
        Err(ConfigError::FailOpenSingleUse)
    );
}

/// What the opt-in lets through, as documented: with `missing` monitored, a
/// request with no ticket reaches the booking handler; with `in_progress`
/// monitored, a second use runs while the first holds the chain (two
/// bookings), and with `replayed` monitored a consumed chain books again.
#[tokio::test]
async fn what_monitoring_on_single_use_lets_through() {
    use queuegate::{Mode, RejectionCode};
    let e = env(Arc::new(MemoryReplayStore::new()));
    let watching = policy()
        .mode_for(RejectionCode::Missing, Mode::Monitor)
        .mode_for(RejectionCode::InProgress, Mode::Monitor)
        .mode_for(RejectionCode::Replayed, Mode::Monitor)
        .allow_monitor_on_single_use(true);
    let verifier = Verifier::new(keys(), watching, e.f.clock.clone(), e.f.store.clone()).unwrap();
    let slow = Act::Slow(Duration::from_millis(200));
    let desk = Desk::new(&[slow, slow, Act::Book]);
    let layer = QueueGateLayer::builder(verifier).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let app = Router::new()
        .route("/reserve", post(book).layer(layer.clone()))
        .route(
            "/open",
            post({
                let seen = seen.clone();
                move |req: Request<Body>| async move {
                    seen.lock().unwrap().push(
                        req.extensions()
                            .get::<queuegate::Rejection>()
                            .map(|r| r.code()),
                    );
                    "let through"
                }
            })
            .layer(layer),
        )
        .with_state(desk.clone());
    // No ticket at all: let through (with the finding in the extensions).
    let res = app
        .clone()
        .oneshot(Request::post("/open").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(*seen.lock().unwrap(), [Some(RejectionCode::Missing)]);
    // Two at once: both run and both book.
    let (a, b) = tokio::join!(send(&app, &e.ticket), send(&app, &e.ticket));
    assert_eq!((a.0, b.0), (200, 200));
    // And once consumed, once more.
    assert_eq!(send(&app, &e.ticket).await.0, 200);
    assert_eq!(desk.bookings(), 3);
}

/// Item 9 rides along: the hold settings are checked as a whole.
#[test]
fn a_hold_shorter_than_the_timeout_is_refused() {
    let bad = policy()
        .hold(Duration::from_secs(5))
        .handler_timeout(Duration::from_secs(10));
    assert!(bad.validate().is_err());
    assert!(policy().validate().is_ok());
    assert!(Policy::new(QUEUE)
        .replay(ReplayMode::SingleUse)
        .validate()
        .is_ok());
}
