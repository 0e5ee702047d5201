//! What the host can plug into the layer: code run on admission, and the
//! response to a rejection.
//!
//! Each hook is a trait with a blanket impl for closures and a no-op `()`
//! impl, in the style of tower-http's `OnFailure`. Changing a hook changes
//! the layer's type, so no boxing is needed. Where the ticket, the binding
//! and the client's clock come from are hooks too: see
//! [`TicketSource`](super::TicketSource), [`BindingSource`](super::BindingSource)
//! and [`ClientTimeSource`](super::ClientTimeSource).

use http::header::{HeaderValue, ACCEPT, CACHE_CONTROL, LOCATION};
use http::request::Parts;
use http::{Response, StatusCode};

use crate::error::ConfigError;
use crate::rejection::{Rejection, RejectionCode};
use crate::verify::Verified;

/// Called when a request is let through with a verified ticket, before the
/// protected service runs (and before the [`Verified`] is put in the request
/// extensions).
///
/// `verified.monitored` holds a finding that monitor mode let through, if
/// any. Requests let through in monitor mode *without* a verified ticket
/// (no ticket at all, garbage) do not reach this hook; their
/// [`Rejection`] is in the request extensions instead.
pub trait OnAdmit: Send + Sync + 'static {
    /// Runs on admission. The default does nothing.
    fn on_admit(&self, verified: &Verified, parts: &Parts) {
        let _ = (verified, parts);
    }
}

/// No-op.
impl OnAdmit for () {}

impl<F> OnAdmit for F
where
    F: Fn(&Verified, &Parts) + Send + Sync + 'static,
{
    fn on_admit(&self, verified: &Verified, parts: &Parts) {
        self(verified, parts)
    }
}

/// Decides the response to an enforced rejection. Returning `None` keeps
/// the default ([`problem_response`](super::problem_response)); returning a
/// response replaces it, for example a redirect to the queue page, or, for
/// [`Rejection::Replayed`] with
/// [`ReplayReason::ConsumedBySameClient`](crate::ReplayReason::ConsumedBySameClient),
/// the booking the same client already made (its response was lost and the
/// client retried).
///
/// `B` is the inner service's response body type. The layer puts the
/// [`Rejection`] in the extensions of whatever response is sent.
pub trait OnReject<B>: Send + Sync + 'static {
    /// The response to send instead of the default, if any. The default
    /// keeps the default response.
    fn on_reject(&self, rejection: &Rejection, parts: &Parts) -> Option<Response<B>> {
        let _ = (rejection, parts);
        None
    }
}

/// Always the default response.
impl<B> OnReject<B> for () {}

impl<F, B> OnReject<B> for F
where
    F: Fn(&Rejection, &Parts) -> Option<Response<B>> + Send + Sync + 'static,
{
    fn on_reject(&self, rejection: &Rejection, parts: &Parts) -> Option<Response<B>> {
        self(rejection, parts)
    }
}

/// An [`OnReject`] hook that sends a browser back to the queue page: a
/// `303 See Other` to `location` for page navigations (`Accept` names
/// `text/html`) refused with a code where rejoining is the way forward
/// (`missing`, `malformed`, `bad_signature`, `unknown_key`, `expired`,
/// `offline_resumed`, `binding_mismatch`, `wrong_queue` and, for a waiting
/// ticket, `not_admitted`). API calls, and codes where a redirect would
/// not help (`replayed`, clock findings, `store_unavailable`), keep the
/// default problem document.
///
/// Needs a response body with `Default` (an empty body).
///
/// ```
/// use queuegate::layer::RedirectToQueue;
/// let hook = RedirectToQueue::new("/queue")?;
/// # Ok::<(), queuegate::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RedirectToQueue {
    location: HeaderValue,
    codes: [bool; RejectionCode::COUNT],
}

impl RedirectToQueue {
    /// Redirects to `location` (a path or an absolute URL).
    pub fn new(location: &str) -> Result<Self, ConfigError> {
        let location = HeaderValue::from_str(location).map_err(|_| ConfigError::Invalid {
            setting: "queue page location",
            reason: "not a valid header value",
        })?;
        let mut codes = [false; RejectionCode::COUNT];
        for code in [
            RejectionCode::Missing,
            RejectionCode::Malformed,
            RejectionCode::BadSignature,
            RejectionCode::UnknownKey,
            RejectionCode::NotAdmitted,
            RejectionCode::Expired,
            RejectionCode::OfflineResumed,
            RejectionCode::BindingMismatch,
            RejectionCode::WrongQueue,
        ] {
            codes[code.index()] = true;
        }
        Ok(Self { location, codes })
    }

    /// Also redirects (or no longer redirects) rejections with `code`.
    #[must_use]
    pub fn code(mut self, code: RejectionCode, redirect: bool) -> Self {
        self.codes[code.index()] = redirect;
        self
    }
}

impl<B: Default> OnReject<B> for RedirectToQueue {
    fn on_reject(&self, rejection: &Rejection, parts: &Parts) -> Option<Response<B>> {
        if !self.codes[rejection.code().index()] || !accepts_html(parts) {
            return None;
        }
        let mut response = Response::new(B::default());
        *response.status_mut() = StatusCode::SEE_OTHER;
        let headers = response.headers_mut();
        headers.insert(LOCATION, self.location.clone());
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Some(response)
    }
}

/// Whether the request is a page navigation (its `Accept` names
/// `text/html`). Reads at most the first 1 KiB of each `Accept` header.
fn accepts_html(parts: &Parts) -> bool {
    parts.headers.get_all(ACCEPT).iter().take(8).any(|v| {
        let v = v.as_bytes();
        v[..v.len().min(1024)]
            .windows(9)
            .any(|w| w.eq_ignore_ascii_case(b"text/html"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(accept: Option<&str>) -> Parts {
        let mut b = http::Request::builder().uri("/book");
        if let Some(a) = accept {
            b = b.header(ACCEPT, a);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn redirects_page_navigations_only() {
        let hook = RedirectToQueue::new("/queue").unwrap();
        let html = parts(Some("text/html,application/xhtml+xml;q=0.9,*/*;q=0.8"));
        let res: Response<String> = hook.on_reject(&Rejection::Missing, &html).unwrap();
        assert_eq!(res.status(), StatusCode::SEE_OTHER);
        assert_eq!(res.headers()[LOCATION], "/queue");
        let api = parts(Some("application/json"));
        assert!(OnReject::<String>::on_reject(&hook, &Rejection::Missing, &api).is_none());
        assert!(OnReject::<String>::on_reject(&hook, &Rejection::Missing, &parts(None)).is_none());
        let skew = Rejection::ClockSkew {
            offset_ms: 600_000,
            tolerance_ms: 300_000,
        };
        assert!(OnReject::<String>::on_reject(&hook, &skew, &html).is_none());
        let hook = hook.code(RejectionCode::ClockSkew, true);
        assert!(OnReject::<String>::on_reject(&hook, &skew, &html).is_some());
        assert!(RedirectToQueue::new("/queue?from=book").is_ok());
        assert!(
            RedirectToQueue::new("/bad\nplace").is_err(),
            "fails at setup"
        );
    }
}
