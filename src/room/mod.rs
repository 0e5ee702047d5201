//! The waiting room: positions, heartbeats, admission at a set rate, the
//! opening shuffle, all behind a [`RoomState`] trait.
//!
//! [`WaitingRoom`] is the engine; [`MemoryRoomState`] keeps its state in
//! this process (nothing survives a restart); [`JoinHook`] lets the host
//! refuse or slow joins; [`schedule`] holds the arithmetic every state
//! implementation shares; [`http`] has the parts of the room's HTTP
//! endpoints every host needs (signed sessions, the cross-site guard, the
//! client's address through trusted proxies).
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use queuegate::room::{MemoryRoomState, WaitingRoom};
//! use queuegate::{ClientTime, Issuer, KeyRing, ManualClock, MemoryReplayStore, Policy, Presented};
//!
//! # fn block_on<F: std::future::Future>(f: F) -> F::Output {
//! #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
//! # }
//! # block_on(async {
//! let clock = ManualClock::new(1_700_000_000_000);
//! let keys = Arc::new(KeyRing::new(1, &[7u8; 32])?);
//! let replay = Arc::new(MemoryReplayStore::new());
//! let issuer = Issuer::new(keys, Policy::new("concert"), clock.clone(), replay)?;
//! let room = WaitingRoom::builder(issuer, MemoryRoomState::new())
//!     .admit_per_sec(1.0)?
//!     .liveness(Duration::from_secs(10), Duration::from_secs(300))?
//!     .build()?;
//!
//! // An empty queue admits its first arrival at once; the next one waits.
//! assert!(room.join(b"session-1", ClientTime::Absent).await?.admitted);
//! let waiting = room.join(b"session-2", ClientTime::Absent).await?;
//! assert_eq!((waiting.position, waiting.ahead, waiting.admitted), (2, 0, false));
//!
//! // A second later its heartbeat brings the admitted ticket.
//! clock.advance(Duration::from_secs(1));
//! let next = room
//!     .heartbeat(&Presented {
//!         ticket: Some(waiting.ticket.as_bytes()),
//!         binding: Some(b"session-2"),
//!         client_time: ClientTime::Absent,
//!     })
//!     .await?;
//! assert!(next.admitted);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```

mod chains;
mod control;
mod counts;
mod door;
mod engine;
mod hook;
pub mod http;
mod line;
mod memory;
#[cfg(feature = "redis")]
pub(crate) mod redis;
pub mod schedule;
mod state;
mod wheel;

#[cfg(feature = "redis")]
pub use self::redis::{
    RedisRoomState, RedisRoomStateBuilder, RoomSettings, SettingsError, LAYOUT as REDIS_LAYOUT,
};
pub use control::{ControlError, ControlSnapshot, Setting, MAX_CLOSE_MESSAGE};
pub use door::{DoorPass, JoinDoor, DOOR_PASS_HEADER};
pub use engine::{RoomError, RoomTicket, WaitingRoom, WaitingRoomBuilder};
pub use hook::{JoinContext, JoinHook, JoinRequest, JoinVerdict};
pub use memory::MemoryRoomState;
pub use schedule::{AdmissionRule, Liveness, TokenBucket};
pub use state::{
    BeatRecord, ChainFacts, ControlWrite, IssuedRecord, JoinRecord, Joined, Place, RoomState,
    RoomStats,
};
