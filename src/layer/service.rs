//! [`QueueGate`]: the service that verifies, then calls the inner service or
//! answers with a rejection.

use std::fmt;
use std::mem;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::request::Parts;
use http::{Request, Response};
use tower_service::Service;

use super::extract::{BindingSource, ClientTimeSource, TicketSource};
use super::future::ResponseFuture;
use super::hooks::{OnAdmit, OnReject};
use super::layer::Gate;
use super::response::{problem_response, QueueGateBody};
use crate::clock::Clock;
use crate::rejection::Rejection;
use crate::replay::ReplayStore;
use crate::verify::{Presented, Verified};

/// The middleware service built by [`QueueGateLayer`](super::QueueGateLayer).
///
/// Readiness is the inner service's: `poll_ready` is passed through, so
/// backpressure (a concurrency limit, a full buffer) reaches the caller.
/// Rejections are responses, so `Error` is the inner service's error.
pub struct QueueGate<S, C, St, T, B, K, A, R> {
    inner: S,
    gate: Arc<Gate<C, St, T, B, K, A, R>>,
}

impl<S, C, St, T, B, K, A, R> QueueGate<S, C, St, T, B, K, A, R> {
    pub(super) fn from_parts(inner: S, gate: Arc<Gate<C, St, T, B, K, A, R>>) -> Self {
        Self { inner, gate }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, C, St, T, B, K, A, R> Clone for QueueGate<S, C, St, T, B, K, A, R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            gate: self.gate.clone(),
        }
    }
}

impl<S: fmt::Debug, C, St, T, B, K, A, R> fmt::Debug for QueueGate<S, C, St, T, B, K, A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueueGate")
            .field("inner", &self.inner)
            .field("gate", &self.gate)
            .finish()
    }
}

impl<S, C, St, T, B, K, A, R, ReqBody, ResBody> Service<Request<ReqBody>>
    for QueueGate<S, C, St, T, B, K, A, R>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone,
    C: Clock,
    St: ReplayStore,
    T: TicketSource,
    B: BindingSource,
    K: ClientTimeSource,
    A: OnAdmit,
    R: OnReject<ResBody>,
{
    type Response = Response<QueueGateBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<
        S,
        ReqBody,
        ResBody,
        Gate<C, St, T, B, K, A, R>,
        St::CheckFuture,
        St::SettleFuture,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let gate = &*self.gate;
        let verified = match gate.inspect(&parts) {
            Ok(verified) => verified,
            Err(rejection) if gate.verifier.policy().enforces(rejection.code()) => {
                return ResponseFuture::rejected(gate.reject(rejection, &parts));
            }
            Err(rejection) => {
                gate.let_through_unverified(rejection, &mut parts);
                return ResponseFuture::inner(self.inner.call(Request::from_parts(parts, body)));
            }
        };
        match gate.verifier.replay(&verified) {
            None => {
                gate.admit(verified, &mut parts);
                ResponseFuture::inner(self.inner.call(Request::from_parts(parts, body)))
            }
            Some(check) => {
                // The service polled ready is `self.inner`: take it into the
                // future and leave a fresh clone behind (tower's documented
                // pattern for services called after an await).
                let clone = self.inner.clone();
                let ready = mem::replace(&mut self.inner, clone);
                ResponseFuture::replay(check, verified, parts, body, ready, self.gate.clone())
            }
        }
    }
}

impl<C, St, T, B, K, A, R> Gate<C, St, T, B, K, A, R>
where
    C: Clock,
    St: ReplayStore,
    T: TicketSource,
    B: BindingSource,
    K: ClientTimeSource,
    A: OnAdmit,
{
    /// Extraction and every check that needs no shared state.
    fn inspect(&self, parts: &Parts) -> Result<Verified, Rejection> {
        let ticket = self.tickets.ticket(parts)?;
        if ticket.is_none() {
            return Err(Rejection::Missing);
        }
        let binding = self.binding.binding(parts);
        let client_time = self.client_time.client_time(parts);
        let presented = Presented {
            ticket,
            binding: binding.as_deref(),
            client_time,
        };
        let checked = self.verifier.check(&presented);
        // The offset histogram takes the clock of requests that pass, once
        // per chain: a refused request (a waiting bot on a protected
        // route, a forged ticket) or a busy client must not be able to move
        // the middle of the histogram operators judge the server clock by.
        if let (true, Ok(v)) = (self.counting, &checked) {
            if let Some(offset) = v.client_offset_ms {
                self.metrics
                    .observe_chain_offset_ms(v.claims.ticket_id, offset);
            }
        }
        checked
    }

    /// Lets a verified request through: counts it, runs the hook, and puts
    /// the [`Verified`] in the request extensions.
    pub(super) fn admit(&self, verified: Verified, parts: &mut Parts) {
        if self.counting {
            self.metrics.record_admission();
        }
        if let Some(finding) = &verified.monitored {
            if self.counting {
                self.metrics.record_monitored(finding.code());
            }
            trace_monitored(finding);
        }
        self.on_admit.on_admit(&verified, parts);
        parts.extensions.insert(verified);
    }

    /// Lets a request through that failed a structural check monitor mode
    /// does not enforce (no verified ticket): the [`Rejection`] goes into
    /// the request extensions.
    fn let_through_unverified(&self, rejection: Rejection, parts: &mut Parts) {
        if self.counting {
            self.metrics.record_admission();
            self.metrics.record_monitored(rejection.code());
        }
        trace_monitored(&rejection);
        parts.extensions.insert(rejection);
    }

    /// The response to an enforced rejection.
    pub(super) fn reject<ResBody>(
        &self,
        rejection: Rejection,
        parts: &Parts,
    ) -> Response<QueueGateBody<ResBody>>
    where
        R: OnReject<ResBody>,
    {
        if self.counting {
            self.metrics.record_rejection(rejection.code());
        }
        #[cfg(feature = "tracing")]
        tracing::debug!(
            code = rejection.code().as_str(),
            status = rejection.status().as_u16(),
            "queuegate refused a request"
        );
        match self.on_reject.on_reject(&rejection, parts) {
            Some(response) => {
                let mut response = response.map(QueueGateBody::inner);
                response.extensions_mut().insert(rejection);
                response
            }
            None => problem_response(&rejection).map(QueueGateBody::problem),
        }
    }
}

#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
fn trace_monitored(finding: &Rejection) {
    #[cfg(feature = "tracing")]
    tracing::info!(
        code = finding.code().as_str(),
        "queuegate monitor mode let through a request that enforce mode would refuse"
    );
}
