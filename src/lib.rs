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
//!
//! # Features
//!
//! None is on by default. Without any, the crate has the tickets, keys,
//! verifier and issuer, the tower layer, the waiting room on in-memory
//! state (one instance) with its HTTP building blocks ([`room::http`]:
//! sessions, cross-site refusal, client addresses, the browser client), the
//! counters with their Prometheus text, and the health checks.
//!
//! - **`axum`**: the axum extractor for the verified ticket,
//!   [`layer::QueueTicket`] (and its rejection
//!   [`layer::MissingQueueTicket`], "is the layer installed?"), through
//!   `axum-core` 0.5 (axum 0.8).
//! - **`redis`**: state shared by several instances in Redis, through the
//!   `redis` client on tokio: [`replay::RedisReplayStore`] (the replay
//!   store), [`room::RedisRoomState`] (the waiting room's state) and
//!   [`health::RedisTime`] (Redis `TIME` as a reference for the
//!   server-clock check).
//! - **`tracing`**: [`tracing`](https://docs.rs/tracing) events from the
//!   layer: `DEBUG` when it refuses a request (the code and status), `INFO`
//!   when monitor mode lets through a request that enforce mode would
//!   refuse (the code). Never ticket text, bindings or keys.
//! - **`metrics`**: every counter, gauge and offset of [`Metrics`] also
//!   reported to the [`metrics`](https://docs.rs/metrics) facade's global
//!   recorder, under the same names and `code` labels. Install the recorder
//!   before creating the [`Metrics`]: the handles are registered then.
//!
//! On docs.rs every feature is on, and items that need one say which.
#![cfg_attr(docsrs, feature(doc_cfg))]
// Without those features, the Features section's links to the items they
// gate have no target; the all-features doc build (CI, docs.rs) checks them.
#![cfg_attr(
    not(all(feature = "axum", feature = "redis")),
    allow(rustdoc::broken_intra_doc_links)
)]
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
pub use issuer::{ChainFacts, Issuer, JoinDecision, Minted, RenewDecision};
pub use keys::{KeyRing, KeyRingBuilder, MacKey};
pub use layer::{QueueGate, QueueGateBuilder, QueueGateLayer};
pub use metrics::{Metrics, MetricsSnapshot};
pub use rejection::{MalformedReason, Rejection, RejectionCode, ReplayReason};
pub use replay::{Hold, MemoryReplayStore, ReplayMode, ReplayStore, Settlement};
pub use room::{MemoryRoomState, RoomError, RoomState, RoomTicket, WaitingRoom};
pub use ticket::{Claims, TicketId, TicketKind};
pub use verify::{
    ClientTime, ClientTimeRule, IdempotencyKey, Mode, Policy, Presented, Verified, Verifier,
};
