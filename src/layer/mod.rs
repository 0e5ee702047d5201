//! The tower adapter: extract the ticket, call the [`Verifier`](crate::Verifier),
//! answer with a rejection or call the protected service.
//!
//! ```
//! use std::sync::Arc;
//! use queuegate::layer::QueueGateLayer;
//! use queuegate::{KeyRing, MemoryReplayStore, Policy, SystemClock, Verifier};
//! use tower::ServiceBuilder;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let keys = Arc::new(KeyRing::new(1, &[7u8; 32])?);
//! let store = Arc::new(MemoryReplayStore::new());
//! let verifier = Verifier::new(keys, Policy::new("concert"), SystemClock, store)?;
//! let service = ServiceBuilder::new()
//!     .layer(QueueGateLayer::new(verifier))
//!     .service_fn(|_req: http::Request<String>| async {
//!         Ok::<_, std::convert::Infallible>(http::Response::new(String::from("booked")))
//!     });
//! # let _ = service;
//! # Ok(()) }
//! ```

#[cfg(feature = "axum")]
mod axum;
mod extract;
mod future;
mod hold;
mod hooks;
#[allow(clippy::module_inception)]
mod layer;
mod response;
mod service;

#[cfg(feature = "axum")]
pub use self::axum::{MissingQueueTicket, QueueTicket};
pub use extract::{
    BindingSource, ClientTimeHeader, ClientTimeSource, HeaderBinding, SessionCookie,
    TicketLocation, TicketSource, DEFAULT_CLIENT_TIME_HEADER, DEFAULT_SESSION_COOKIE,
    DEFAULT_TICKET_HEADER, MAX_COOKIE_BYTES, MAX_COOKIE_LINES,
};
pub use future::ResponseFuture;
pub use hold::{HoldRules, NoSideEffects};
pub use hooks::{OnAdmit, OnReject, RedirectToQueue};
pub use layer::{Gate, QueueGateBuilder, QueueGateLayer};
pub use response::{problem_response, QueueGateBody, PROBLEM_JSON, PROBLEM_TYPE_PREFIX};
pub use service::QueueGate;
