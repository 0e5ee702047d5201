//! queuegate makes a virtual waiting room impossible to skip.
//!
//! The waiting room signs a queue ticket (HMAC-SHA256) for every client and
//! renews it on each heartbeat; every protected request must present an
//! admitted ticket, which the server verifies on its own clock. Missing,
//! malformed, forged, expired, not-yet-admitted, replayed, cloned,
//! offline-resumed, clock-tampered, foreign and misbound tickets are
//! refused, each with a stable [`RejectionCode`].
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use queuegate::{
//!     ClientTime, Issuer, JoinDecision, KeyRing, ManualClock, MemoryReplayStore, Policy,
//!     Presented, RejectionCode, Verifier,
//! };
//!
//! # tokio_test_block_on(async {
//! let keys = Arc::new(KeyRing::new(1, &[7u8; 32])?);
//! let store = Arc::new(MemoryReplayStore::new());
//! let clock = ManualClock::new(1_700_000_000_000);
//! let policy = Policy::new("vaccine-53-54");
//! let issuer = Issuer::new(keys.clone(), policy.clone(), clock.clone(), store.clone())?;
//! let verifier = Verifier::new(keys, policy, clock.clone(), store)?;
//!
//! // The waiting room admits a client at once (the queue is empty).
//! let decision = JoinDecision {
//!     position: 1,
//!     live_for: Duration::from_secs(30),
//!     estimated_wait: Duration::ZERO,
//!     admit: true,
//! };
//! let minted = issuer.join(b"session-42", ClientTime::Absent, &decision)?;
//!
//! // The protected service checks it on every request.
//! let ok = Presented {
//!     ticket: Some(minted.ticket.as_bytes()),
//!     binding: Some(b"session-42"),
//!     client_time: ClientTime::Absent,
//! };
//! assert!(verifier.verify(&ok).await.is_ok());
//!
//! // Someone else's session: refused.
//! let stolen = Presented { binding: Some(b"session-99"), ..ok };
//! let err = verifier.verify(&stolen).await.unwrap_err();
//! assert_eq!(err.code(), RejectionCode::BindingMismatch);
//!
//! // Gone offline past the liveness deadline: refused.
//! clock.advance(Duration::from_secs(31));
//! let err = verifier.verify(&ok).await.unwrap_err();
//! assert_eq!(err.code(), RejectionCode::OfflineResumed);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! # fn tokio_test_block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! ```
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod amnesty;
pub mod clock;
pub mod cookie;
pub mod error;
pub mod health;
pub mod issuer;
pub mod keys;
pub mod layer;
pub mod metrics;
pub mod rejection;
pub mod replay;
pub mod room;
pub mod ticket;
pub mod verify;

pub use amnesty::Amnesty;
pub use clock::{Clock, ManualClock, MonotonicClock, SystemClock};
pub use error::{ConfigError, StoreError};
pub use issuer::{Issuer, JoinDecision, Minted, RenewDecision};
pub use keys::{KeyRing, KeyRingBuilder, MacKey};
pub use layer::{QueueGate, QueueGateBuilder, QueueGateLayer};
pub use metrics::{Metrics, MetricsSnapshot};
pub use rejection::{MalformedReason, Rejection, RejectionCode, ReplayReason};
pub use replay::{MemoryReplayStore, ReplayMode, ReplayStore};
pub use room::{MemoryRoomState, RoomError, RoomState, RoomTicket, WaitingRoom};
pub use ticket::{Claims, TicketId, TicketKind};
pub use verify::{ClientTime, ClientTimeRule, Mode, Policy, Presented, Verified, Verifier};
