//! The waiting room: positions, heartbeats, admission at a set rate, the
//! opening shuffle, all behind a [`RoomState`] trait.
//!
//! [`WaitingRoom`] is the engine; [`MemoryRoomState`] keeps its state in
//! this process (nothing survives a restart); [`JoinHook`] lets the host
//! refuse or slow joins; [`schedule`] holds the arithmetic every state
//! implementation shares.

mod engine;
mod hook;
mod memory;
pub mod schedule;
mod state;

pub use engine::{RoomError, RoomTicket, WaitingRoom, WaitingRoomBuilder};
pub use hook::{JoinContext, JoinHook, JoinVerdict};
pub use memory::MemoryRoomState;
pub use schedule::{AdmissionRule, Liveness, TokenBucket};
pub use state::{BeatRecord, IssuedRecord, JoinRecord, Joined, Place, RoomState, RoomStats};
