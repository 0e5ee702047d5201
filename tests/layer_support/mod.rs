//! Shared fixtures for the layer's integration tests: a manual clock, one
//! key ring and store, an issuer that mints real tickets.
#![allow(dead_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use queuegate::replay::{Advance, AdvanceRequest, ReplayCheck, ReplayVerdict, SettleHold};
use queuegate::{
    ClientTime, Issuer, JoinDecision, KeyRing, ManualClock, MemoryReplayStore, Metrics, Policy,
    ReplayStore, StoreError, Verifier,
};

pub const QUEUE: &str = "vaccine-53-54";
pub const T0: i64 = 1_626_566_400_000; // 2021-07-18T00:00:00Z
pub const SESSION: &str = "session-42";

pub struct Fixture {
    pub clock: ManualClock,
    pub keys: Arc<KeyRing>,
    pub store: Arc<MemoryReplayStore>,
    pub issuer: Issuer<ManualClock, MemoryReplayStore>,
    pub metrics: Metrics,
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

impl Fixture {
    pub fn new() -> Self {
        let clock = ManualClock::new(T0);
        let keys = Arc::new(KeyRing::new(1, &[7u8; 32]).unwrap());
        let store = Arc::new(MemoryReplayStore::new());
        let issuer = Issuer::new(
            keys.clone(),
            Policy::new(QUEUE),
            clock.clone(),
            store.clone(),
        )
        .unwrap()
        .admitted_ttl(Duration::from_secs(600));
        Self {
            clock,
            keys,
            store,
            issuer,
            metrics: Metrics::new(),
        }
    }

    pub fn verifier(&self, policy: Policy) -> Verifier<ManualClock, MemoryReplayStore> {
        Verifier::new(
            self.keys.clone(),
            policy,
            self.clock.clone(),
            self.store.clone(),
        )
        .unwrap()
    }

    pub fn verifier_with<S: ReplayStore>(
        &self,
        policy: Policy,
        store: S,
    ) -> Verifier<ManualClock, S> {
        Verifier::new(
            self.keys.clone(),
            policy,
            self.clock.clone(),
            Arc::new(store),
        )
        .unwrap()
    }

    /// An admitted ticket bound to `session`, alive for an hour (expires
    /// after the issuer's 10 minutes).
    pub fn admitted(&self, session: &str) -> String {
        self.mint(session, true, Duration::from_secs(3600), ClientTime::Absent)
    }

    /// A waiting ticket bound to `session`.
    pub fn waiting(&self, session: &str) -> String {
        self.mint(
            session,
            false,
            Duration::from_secs(3600),
            ClientTime::Absent,
        )
    }

    pub fn mint(&self, session: &str, admit: bool, live_for: Duration, t: ClientTime) -> String {
        let decision = JoinDecision {
            position: 1,
            live_for,
            estimated_wait: Duration::from_secs(90),
            admit,
        };
        self.issuer
            .join(session.as_bytes(), t, &decision)
            .unwrap()
            .ticket
    }

    /// An admitted ticket of another queue, same keys.
    pub fn other_queue(&self, session: &str) -> String {
        self.admitted_by(self.keys.clone(), "another-event", session)
    }

    /// An admitted ticket signed with key id 2, which the fixture's ring
    /// does not hold.
    pub fn foreign_key(&self, session: &str) -> String {
        let keys = Arc::new(KeyRing::new(2, &[9u8; 32]).unwrap());
        self.admitted_by(keys, QUEUE, session)
    }

    /// An admitted ticket for `queue` minted by an issuer on `keys`.
    fn admitted_by(&self, keys: Arc<KeyRing>, queue: &str, session: &str) -> String {
        let issuer = Issuer::new(
            keys,
            Policy::new(queue),
            self.clock.clone(),
            self.store.clone(),
        )
        .unwrap();
        let decision = JoinDecision {
            position: 1,
            live_for: Duration::from_secs(3600),
            estimated_wait: Duration::ZERO,
            admit: true,
        };
        issuer
            .join(session.as_bytes(), ClientTime::Absent, &decision)
            .unwrap()
            .ticket
    }
}

/// A ticket with one character of its tag changed (still canonical
/// base64url): `bad_signature`.
pub fn tamper(ticket: &str) -> String {
    let mut bytes = ticket.as_bytes().to_vec();
    let i = bytes.len() - 10;
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).unwrap()
}

pub fn cookie(session: &str) -> String {
    format!("qg_session={session}")
}

/// A store that is down: every check fails.
pub struct DownStore {
    pub epoch: u32,
}

impl ReplayStore for DownStore {
    type CheckFuture = std::future::Ready<Result<ReplayVerdict, StoreError>>;
    type AdvanceFuture = std::future::Ready<Result<Advance, StoreError>>;
    type SettleFuture = std::future::Ready<Result<(), StoreError>>;

    fn epoch(&self) -> u32 {
        self.epoch
    }

    fn settle(&self, _: &SettleHold) -> Self::SettleFuture {
        std::future::ready(Err(StoreError::Timeout))
    }

    fn check(&self, _: &ReplayCheck) -> Self::CheckFuture {
        std::future::ready(Err(StoreError::Timeout))
    }

    fn advance(&self, _: &AdvanceRequest) -> Self::AdvanceFuture {
        std::future::ready(Err(StoreError::Timeout))
    }
}

/// A store whose answers are not ready at first poll (like a network
/// store): wraps the memory store and returns Pending once.
pub struct SlowStore(pub Arc<MemoryReplayStore>);

pub struct YieldOnce<T> {
    value: Option<T>,
    yielded: bool,
}

impl<T: Unpin> Future for YieldOnce<T> {
    type Output = T;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.value.take().expect("polled after completion"))
    }
}

impl ReplayStore for SlowStore {
    type CheckFuture = YieldOnce<Result<ReplayVerdict, StoreError>>;
    type AdvanceFuture = YieldOnce<Result<Advance, StoreError>>;
    type SettleFuture = YieldOnce<Result<(), StoreError>>;

    fn epoch(&self) -> u32 {
        self.0.epoch()
    }

    fn settle(&self, s: &SettleHold) -> Self::SettleFuture {
        // Eager, as the trait requires: the work is done before the
        // future is returned.
        let value = now_or_never(self.0.settle(s));
        YieldOnce {
            value: Some(value),
            yielded: false,
        }
    }

    fn check(&self, c: &ReplayCheck) -> Self::CheckFuture {
        let value = now_or_never(self.0.check(c));
        YieldOnce {
            value: Some(value),
            yielded: false,
        }
    }

    fn advance(&self, a: &AdvanceRequest) -> Self::AdvanceFuture {
        let value = now_or_never(self.0.advance(a));
        YieldOnce {
            value: Some(value),
            yielded: false,
        }
    }
}

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

pub fn noop_waker() -> Waker {
    Waker::from(Arc::new(Flag(AtomicBool::new(false))))
}

/// Polls a future that must be ready at once.
pub fn now_or_never<F: Future>(f: F) -> F::Output {
    let waker = noop_waker();
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("future was not ready"),
    }
}

/// One HTTP request of a test case.
#[derive(Debug, Clone)]
pub struct Req {
    pub method: &'static str,
    pub path: &'static str,
    pub headers: Vec<(&'static str, String)>,
}

impl Req {
    pub fn get(path: &'static str) -> Self {
        Self {
            method: "GET",
            path,
            headers: Vec::new(),
        }
    }

    pub fn post(path: &'static str) -> Self {
        Self {
            method: "POST",
            path,
            headers: Vec::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// The ticket header and the binding cookie of `session`.
    pub fn ticket(self, ticket: &str, session: &str) -> Self {
        self.header("queue-ticket", ticket)
            .header("cookie", cookie(session))
    }

    pub fn to_http(&self) -> http::Request<()> {
        let mut b = http::Request::builder().method(self.method).uri(self.path);
        for (k, v) in &self.headers {
            b = b.header(*k, v.as_str());
        }
        b.body(()).unwrap()
    }
}

/// A request that must be refused with `code`, after `before` (each of
/// which must succeed) and after moving the clock by `advance`.
pub struct Case {
    pub code: queuegate::RejectionCode,
    pub before: Vec<Req>,
    pub advance: Duration,
    pub req: Req,
    /// A ticket that must not appear in the response.
    pub ticket: String,
}

/// The routes the cases assume: `/browse` (session replay, default
/// policy), `/reserve` (single use, scope `reserve`), `/down` (a replay
/// store that is down). Cases that move the clock come last.
pub fn rejection_cases(fx: &Fixture) -> Vec<Case> {
    use queuegate::RejectionCode as C;
    let case = |code, ticket: &str, req: Req| Case {
        code,
        before: Vec::new(),
        advance: Duration::ZERO,
        req,
        ticket: ticket.to_owned(),
    };
    let ok = fx.admitted(SESSION);
    let mut cases = vec![
        case(
            C::Missing,
            "",
            Req::get("/browse").header("cookie", cookie(SESSION)),
        ),
        case(
            C::Malformed,
            "garbage",
            Req::get("/browse").ticket("garbage", SESSION),
        ),
        {
            let t = tamper(&fx.admitted(SESSION));
            case(C::BadSignature, &t, Req::get("/browse").ticket(&t, SESSION))
        },
        {
            let t = fx.foreign_key(SESSION);
            case(C::UnknownKey, &t, Req::get("/browse").ticket(&t, SESSION))
        },
        {
            let t = fx.waiting(SESSION);
            case(C::NotAdmitted, &t, Req::get("/browse").ticket(&t, SESSION))
        },
        {
            // The booking handler answers 202 to `x-keep-hold` (outside the
            // success set, which is 200): its hold stays, and the next use
            // of the chain is in progress.
            let t = fx.admitted(SESSION);
            Case {
                code: C::InProgress,
                before: vec![Req::post("/reserve")
                    .ticket(&t, SESSION)
                    .header("x-keep-hold", "1".to_owned())],
                advance: Duration::ZERO,
                req: Req::post("/reserve").ticket(&t, SESSION),
                ticket: t,
            }
        },
        {
            let t = fx.admitted(SESSION);
            Case {
                code: C::Replayed,
                before: vec![Req::post("/reserve").ticket(&t, SESSION)],
                advance: Duration::ZERO,
                req: Req::post("/reserve").ticket(&t, SESSION),
                ticket: t,
            }
        },
        case(
            C::ClockSkew,
            &ok,
            Req::get("/browse")
                .ticket(&ok, SESSION)
                .header("queue-client-time", (T0 + 600_000).to_string()),
        ),
        {
            let t = fx.mint(
                SESSION,
                true,
                Duration::from_secs(3600),
                ClientTime::Millis(T0),
            );
            case(
                C::ClockJump,
                &t,
                Req::get("/browse")
                    .ticket(&t, SESSION)
                    .header("queue-client-time", (T0 + 120_000).to_string()),
            )
        },
        case(
            C::BindingMismatch,
            &ok,
            Req::get("/browse").ticket(&ok, "someone-else"),
        ),
        {
            let t = fx.other_queue(SESSION);
            case(C::WrongQueue, &t, Req::get("/browse").ticket(&t, SESSION))
        },
        case(
            C::StoreUnavailable,
            &ok,
            Req::get("/down").ticket(&ok, SESSION),
        ),
    ];
    let short = fx.mint(SESSION, true, Duration::from_secs(30), ClientTime::Absent);
    cases.push(Case {
        code: C::OfflineResumed,
        before: vec![Req::get("/browse").ticket(&short, SESSION)],
        advance: Duration::from_secs(31),
        req: Req::get("/browse").ticket(&short, SESSION),
        ticket: short,
    });
    let long = fx.admitted(SESSION);
    cases.push(Case {
        code: C::Expired,
        before: vec![Req::get("/browse").ticket(&long, SESSION)],
        advance: Duration::from_secs(600),
        req: Req::get("/browse").ticket(&long, SESSION),
        ticket: long,
    });
    cases
}
