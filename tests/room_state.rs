//! The room-state conformance suite against the in-memory state.

mod room_state_support;

use queuegate::room::MemoryRoomState;

room_state_conformance!(|| async { MemoryRoomState::new() });
