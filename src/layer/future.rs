//! The response future of [`QueueGate`](super::QueueGate): a small state
//! machine, no boxing.
//!
//! ```text
//! call ──rejected──────────────────────────────▶ Rejected ─▶ response
//!   │ ──admitted, no replay state────────────────▶ Inner ─▶ inner response
//!   └──needs the replay store──▶ Replay ──fresh──▶ Inner
//!                                   └──replayed / store down──▶ response
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::request::Parts;
use http::{Request, Response};
use pin_project_lite::pin_project;
use tower_service::Service;

use super::extract::{BindingSource, ClientTimeSource, TicketSource};
use super::hooks::{OnAdmit, OnReject};
use super::layer::Gate;
use super::response::QueueGateBody;
use crate::clock::Clock;
use crate::error::StoreError;
use crate::replay::{ReplayStore, ReplayVerdict};
use crate::verify::Verified;

/// What waits for the replay store's answer: the request and the inner
/// service that was polled ready.
struct Waiting<S, ReqBody, G> {
    verified: Verified,
    parts: Parts,
    body: ReqBody,
    service: S,
    gate: Arc<G>,
}

pin_project! {
    #[project = StateProj]
    enum State<SF, F, S, ReqBody, ResBody, G> {
        Replay {
            #[pin]
            check: SF,
            waiting: Option<Waiting<S, ReqBody, G>>,
        },
        Inner {
            #[pin]
            future: F,
        },
        Rejected {
            response: Option<Response<QueueGateBody<ResBody>>>,
        },
    }
}

pin_project! {
    /// The response future of [`QueueGate`](super::QueueGate).
    ///
    /// `G` is the layer's [`Gate`] and `SF` its replay store's check future
    /// (a ready future for the in-memory store).
    pub struct ResponseFuture<S, ReqBody, ResBody, G, SF>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<SF, S::Future, S, ReqBody, ResBody, G>,
    }
}

impl<S, ReqBody, ResBody, G, SF> ResponseFuture<S, ReqBody, ResBody, G, SF>
where
    S: Service<Request<ReqBody>>,
{
    pub(super) fn rejected(response: Response<QueueGateBody<ResBody>>) -> Self {
        Self {
            state: State::Rejected {
                response: Some(response),
            },
        }
    }

    pub(super) fn inner(future: S::Future) -> Self {
        Self {
            state: State::Inner { future },
        }
    }

    pub(super) fn replay(
        check: SF,
        verified: Verified,
        parts: Parts,
        body: ReqBody,
        service: S,
        gate: Arc<G>,
    ) -> Self {
        Self {
            state: State::Replay {
                check,
                waiting: Some(Waiting {
                    verified,
                    parts,
                    body,
                    service,
                    gate,
                }),
            },
        }
    }
}

impl<S, ReqBody, ResBody, C, St, T, B, K, A, R, SF> Future
    for ResponseFuture<S, ReqBody, ResBody, Gate<C, St, T, B, K, A, R>, SF>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    SF: Future<Output = Result<ReplayVerdict, StoreError>>,
    C: Clock,
    St: ReplayStore,
    T: TicketSource,
    B: BindingSource,
    K: ClientTimeSource,
    A: OnAdmit,
    R: OnReject<ResBody>,
{
    type Output = Result<Response<QueueGateBody<ResBody>>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.project().state;
        loop {
            match state.as_mut().project() {
                StateProj::Replay { check, waiting } => {
                    let answer = ready!(check.poll(cx));
                    let Waiting {
                        verified,
                        mut parts,
                        body,
                        mut service,
                        gate,
                    } = waiting
                        .take()
                        .expect("ResponseFuture polled after completion");
                    match gate.verifier.finish(verified, answer) {
                        Ok(verified) => {
                            gate.admit(verified, &mut parts);
                            let future = service.call(Request::from_parts(parts, body));
                            state.set(State::Inner { future });
                        }
                        Err(rejection) => {
                            let response = gate.reject(rejection, &parts);
                            state.set(State::Rejected { response: None });
                            return Poll::Ready(Ok(response));
                        }
                    }
                }
                StateProj::Inner { future } => {
                    let response = ready!(future.poll(cx))?;
                    return Poll::Ready(Ok(response.map(QueueGateBody::inner)));
                }
                StateProj::Rejected { response } => {
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response));
                }
            }
        }
    }
}
