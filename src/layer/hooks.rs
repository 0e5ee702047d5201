//! What the host can plug into the layer: code run on admission, and the
//! response to a rejection.
//!
//! Each hook is a trait with a blanket impl for closures and a no-op `()`
//! impl, in the style of tower-http's `OnFailure`. Changing a hook changes
//! the layer's type, so no boxing is needed. Where the ticket, the binding
//! and the client's clock come from are hooks too: see
//! [`TicketSource`](super::TicketSource), [`BindingSource`](super::BindingSource)
//! and [`ClientTimeSource`](super::ClientTimeSource).

use http::request::Parts;
use http::Response;

use crate::rejection::Rejection;
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
    /// Runs on admission.
    fn on_admit(&self, verified: &Verified, parts: &Parts);
}

/// No-op.
impl OnAdmit for () {
    fn on_admit(&self, _: &Verified, _: &Parts) {}
}

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
    /// The response to send instead of the default, if any.
    fn on_reject(&self, rejection: &Rejection, parts: &Parts) -> Option<Response<B>>;
}

/// Always the default response.
impl<B> OnReject<B> for () {
    fn on_reject(&self, _: &Rejection, _: &Parts) -> Option<Response<B>> {
        None
    }
}

impl<F, B> OnReject<B> for F
where
    F: Fn(&Rejection, &Parts) -> Option<Response<B>> + Send + Sync + 'static,
{
    fn on_reject(&self, rejection: &Rejection, parts: &Parts) -> Option<Response<B>> {
        self(rejection, parts)
    }
}
