//! The response future of [`QueueGate`](super::QueueGate): a small state
//! machine, no boxing.
//!
//! ```text
//! call ──rejected──────────────────────────────▶ Rejected ─▶ response
//!   │ ──admitted, no replay state────────────────▶ Inner ─▶ inner response
//!   └──needs the replay store──▶ Replay ──fresh──▶ Inner
//!                                   │  └─hold taken─▶ Held ──response──▶ Settling ─▶ response
//!                                   │                  └──timeout──▶ in_progress
//!                                   └──replayed / in_progress / store down──▶ response
//! ```
//!
//! A `single_use` scope's hold is settled when the handler's response is
//! known (see [`HoldRules`](super::HoldRules)); the store starts the
//! settlement at once, so dropping this future afterwards (the client went
//! away) cannot undo a commit. Dropping it while the handler runs settles
//! nothing: the hold is kept until it expires.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

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
use crate::rejection::Rejection;
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

/// What a running `single_use` handler needs to settle its hold, or to
/// answer `in_progress` when it times out.
struct Holding<G> {
    verified: Verified,
    /// The request's method, URI and headers (for the rejection hook).
    parts: Parts,
    gate: Arc<G>,
}

pin_project! {
    #[project = StateProj]
    enum State<SF, TF, F, S, ReqBody, ResBody, G> {
        Replay {
            #[pin]
            check: SF,
            waiting: Option<Waiting<S, ReqBody, G>>,
        },
        Inner {
            #[pin]
            future: F,
        },
        Held {
            #[pin]
            future: F,
            #[pin]
            deadline: tokio::time::Sleep,
            holding: Option<Holding<G>>,
        },
        Settling {
            #[pin]
            settle: TF,
            response: Option<Response<QueueGateBody<ResBody>>>,
        },
        Rejected {
            response: Option<Response<QueueGateBody<ResBody>>>,
        },
    }
}

pin_project! {
    /// The response future of [`QueueGate`](super::QueueGate).
    ///
    /// `G` is the layer's [`Gate`], `SF` its replay store's check future
    /// (a ready future for the in-memory store) and `TF` its settle future.
    pub struct ResponseFuture<S, ReqBody, ResBody, G, SF, TF>
    where
        S: Service<Request<ReqBody>>,
    {
        #[pin]
        state: State<SF, TF, S::Future, S, ReqBody, ResBody, G>,
    }
}

impl<S, ReqBody, ResBody, G, SF, TF> ResponseFuture<S, ReqBody, ResBody, G, SF, TF>
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

/// The parts a rejection hook may read, without the extensions (which are
/// not cloneable and go to the handler).
fn copy_parts(parts: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = parts.uri.clone();
    *req.version_mut() = parts.version;
    *req.headers_mut() = parts.headers.clone();
    req.into_parts().0
}

impl<S, ReqBody, ResBody, C, St, T, B, K, A, R, SF> Future
    for ResponseFuture<S, ReqBody, ResBody, Gate<C, St, T, B, K, A, R>, SF, St::SettleFuture>
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
                        Ok(verified) if verified.hold.is_some() => {
                            let holding = Holding {
                                verified: verified.clone(),
                                parts: copy_parts(&parts),
                                gate: gate.clone(),
                            };
                            gate.admit(verified, &mut parts);
                            // The handler ends at its timeout, and never after
                            // its hold (which began before the store's answer):
                            // no retry can start while it runs. The hold's
                            // margin over the timeout (Policy::hold) covers
                            // the commit's round trip.
                            let left = holding
                                .verified
                                .hold
                                .map_or(0, |h| h.until_ms.saturating_sub(gate.verifier.now_ms()))
                                .max(0);
                            let deadline = tokio::time::sleep(
                                gate.verifier
                                    .policy()
                                    .handler_timeout_duration()
                                    .min(Duration::from_millis(left.unsigned_abs())),
                            );
                            let future = service.call(Request::from_parts(parts, body));
                            state.set(State::Held {
                                future,
                                deadline,
                                holding: Some(holding),
                            });
                        }
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
                StateProj::Held {
                    future,
                    deadline,
                    holding,
                } => {
                    if let Poll::Ready(result) = future.poll(cx) {
                        // An error of the inner service keeps the hold.
                        let response = result?;
                        let Holding { verified, gate, .. } = holding
                            .take()
                            .expect("ResponseFuture polled after completion");
                        let settle = gate
                            .hold_rules
                            .settlement(&response)
                            .and_then(|s| gate.verifier.settle(&verified, s));
                        let response = response.map(QueueGateBody::inner);
                        match settle {
                            // Started already: awaited so that the client's
                            // next request sees it settled.
                            Some(settle) => state.set(State::Settling {
                                settle,
                                response: Some(response),
                            }),
                            None => {
                                state.set(State::Rejected { response: None });
                                return Poll::Ready(Ok(response));
                            }
                        }
                        continue;
                    }
                    ready!(deadline.poll(cx));
                    // The handler ran out of time: it is dropped (ended at
                    // its next await) and its hold kept until it expires.
                    let Holding {
                        verified,
                        parts,
                        gate,
                    } = holding
                        .take()
                        .expect("ResponseFuture polled after completion");
                    state.set(State::Rejected { response: None });
                    let until = verified.hold.map_or(0, |h| h.until_ms);
                    let left = until.saturating_sub(gate.verifier.now_ms()).max(1);
                    let rejection = Rejection::InProgress {
                        retry_after_ms: left.unsigned_abs(),
                    };
                    return Poll::Ready(Ok(gate.reject(rejection, &parts)));
                }
                StateProj::Settling { settle, response } => {
                    // A failed settlement leaves the hold to expire; the
                    // response is the handler's either way.
                    let settled = ready!(settle.poll(cx));
                    #[cfg(feature = "tracing")]
                    if let Err(e) = &settled {
                        tracing::warn!(
                            error = %e,
                            "queuegate could not settle a single-use hold: it stays until it expires"
                        );
                    }
                    let _ = settled;
                    let response = response
                        .take()
                        .expect("ResponseFuture polled after completion");
                    return Poll::Ready(Ok(response));
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
