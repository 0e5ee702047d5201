//! [`Health`]: the `/healthz` and `/readyz` answers a host mounts.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use http::{Response, StatusCode};

use super::ClockCheck;

const STARTING: u8 = 0;
const STARTED: u8 = 1;
const FAILED: u8 = 2;

/// Whether this instance should receive traffic, and if not, why.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Ready.
    Ready,
    /// Still starting ([`Health::starting`] until [`Health::started`]).
    Starting,
    /// The start failed, with the host's reason.
    StartFailed(&'static str),
    /// This instance's clock is the outlier ([`ClockCheck::is_suspect`]).
    ClockSuspect,
}

impl Readiness {
    /// A stable machine code: `ready`, `starting`, `start_failed`,
    /// `clock_suspect`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Ready => "ready",
            Self::Starting => "starting",
            Self::StartFailed(_) => "start_failed",
            Self::ClockSuspect => "clock_suspect",
        }
    }
}

/// Liveness and readiness of one instance, for a load balancer or an
/// orchestrator.
///
/// - [`healthz`](Self::healthz): `200 ok` whenever the process can answer.
/// - [`readyz`](Self::readyz): `200` when ready, `503` with a JSON reason on
///   **local faults only**: a start that failed or has not finished, or a
///   [`ClockCheck`] that found this instance's clock to be the outlier.
///
/// A state store outage never makes an instance unready: the store is
/// shared, so it would take every instance out at once and turn the
/// designed `store_unavailable` answer (503 with `Retry-After`) into no
/// answer at all. It is a metric and an alert instead.
///
/// ```
/// use std::sync::Arc;
/// use queuegate::health::{ClockCheck, Health};
///
/// let clock = Arc::new(ClockCheck::new());
/// let health = Health::new().with_clock_check(clock);
/// assert_eq!(health.healthz().status(), 200);
/// assert_eq!(health.readyz().status(), 200);
/// health.start_failed("could not read the signing key");
/// assert_eq!(health.readyz().status(), 503);
/// ```
#[derive(Debug, Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    start: AtomicU8,
    reason: Mutex<&'static str>,
    clock: Option<Arc<ClockCheck>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// An instance that has started (ready unless a check says otherwise).
    pub fn new() -> Self {
        Self::with_state(STARTED)
    }

    /// An instance still starting: unready until [`started`](Self::started).
    pub fn starting() -> Self {
        Self::with_state(STARTING)
    }

    fn with_state(state: u8) -> Self {
        Self {
            inner: Arc::new(Inner {
                start: AtomicU8::new(state),
                reason: Mutex::new(""),
                clock: None,
            }),
        }
    }

    /// Makes readiness follow `check` (unready while its clock is suspect).
    /// Call it before cloning: clones made earlier do not see the check.
    #[must_use]
    pub fn with_clock_check(self, check: Arc<ClockCheck>) -> Self {
        let inner = &self.inner;
        Self {
            inner: Arc::new(Inner {
                start: AtomicU8::new(inner.start.load(Ordering::Relaxed)),
                reason: Mutex::new(*lock(&inner.reason)),
                clock: Some(check),
            }),
        }
    }

    /// The start finished.
    pub fn started(&self) {
        let _ = self.inner.start.compare_exchange(
            STARTING,
            STARTED,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The start failed: unready for good, with `reason` (no secrets: it
    /// is served on `/readyz`).
    pub fn start_failed(&self, reason: &'static str) {
        *lock(&self.inner.reason) = reason;
        self.inner.start.store(FAILED, Ordering::Relaxed);
    }

    /// Whether the instance should receive traffic, and why not.
    pub fn readiness(&self) -> Readiness {
        match self.inner.start.load(Ordering::Relaxed) {
            STARTING => return Readiness::Starting,
            FAILED => return Readiness::StartFailed(*lock(&self.inner.reason)),
            _ => {}
        }
        if self.inner.clock.as_ref().is_some_and(|c| c.is_suspect()) {
            return Readiness::ClockSuspect;
        }
        Readiness::Ready
    }

    /// The answer to `GET /healthz`: `200`, `ok`. The process is up.
    pub fn healthz(&self) -> Response<Bytes> {
        text_response(
            StatusCode::OK,
            "application/json",
            "{\"status\":\"ok\"}".into(),
        )
    }

    /// The answer to `GET /readyz`: `200 {"status":"ready"}`, or `503` with
    /// `{"status":"unready","reason":CODE}` (and the start failure's
    /// message, if any).
    pub fn readyz(&self) -> Response<Bytes> {
        match self.readiness() {
            Readiness::Ready => text_response(
                StatusCode::OK,
                "application/json",
                "{\"status\":\"ready\"}".into(),
            ),
            r => {
                let mut body = format!("{{\"status\":\"unready\",\"reason\":\"{}\"", r.code());
                if let Readiness::StartFailed(msg) = r {
                    body.push_str(",\"detail\":");
                    body.push_str(&serde_json_string(msg));
                }
                body.push('}');
                text_response(StatusCode::SERVICE_UNAVAILABLE, "application/json", body)
            }
        }
    }
}

fn text_response(status: StatusCode, content_type: &'static str, body: String) -> Response<Bytes> {
    let mut res = Response::new(Bytes::from(body));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// A JSON string literal of `s` (quotes, backslashes and control
/// characters escaped).
fn serde_json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::RedisReading;
    use crate::metrics::Metrics;

    fn body(res: &Response<Bytes>) -> &str {
        std::str::from_utf8(res.body()).unwrap()
    }

    #[test]
    fn healthz_is_always_ok() {
        let h = Health::starting();
        h.start_failed("boom");
        let res = h.healthz();
        assert_eq!(res.status(), 200);
        assert_eq!(body(&res), "{\"status\":\"ok\"}");
        assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
    }

    #[test]
    fn readyz_follows_the_start() {
        let h = Health::starting();
        assert_eq!(h.readiness(), Readiness::Starting);
        assert_eq!(h.readyz().status(), 503);
        assert!(body(&h.readyz()).contains("\"reason\":\"starting\""));
        h.started();
        assert_eq!(h.readyz().status(), 200);
        assert_eq!(body(&h.readyz()), "{\"status\":\"ready\"}");
        h.start_failed("the \"key\" file is unreadable");
        // A later `started` does not undo a failure.
        h.started();
        let res = h.readyz();
        assert_eq!(res.status(), 503);
        assert_eq!(
            body(&res),
            "{\"status\":\"unready\",\"reason\":\"start_failed\",\"detail\":\"the \\\"key\\\" file is unreadable\"}"
        );
    }

    /// Unready exactly while the clock check finds this instance the
    /// outlier; a reference that disagrees (a skewed Redis) keeps it ready.
    #[test]
    fn readyz_follows_the_clock_check() {
        let check = Arc::new(ClockCheck::new());
        let h = Health::new().with_clock_check(check.clone());
        let clones = h.clone();
        let m = Metrics::new();
        for _ in 0..100 {
            m.observe_client_offset_ms(-120_000);
        }
        check.check(
            &m.snapshot(),
            Some(RedisReading::from_times(0, -120_000, 0)),
        );
        assert_eq!(clones.readiness(), Readiness::ClockSuspect);
        assert_eq!(h.readyz().status(), 503);
        assert!(body(&h.readyz()).contains("clock_suspect"));

        let m = Metrics::new();
        for _ in 0..100 {
            m.observe_client_offset_ms(0);
        }
        check.check(&m.snapshot(), Some(RedisReading::from_times(0, 300_000, 0)));
        assert!(check.references_disagree());
        assert_eq!(h.readiness(), Readiness::Ready);
        assert_eq!(h.readyz().status(), 200);
    }
}
