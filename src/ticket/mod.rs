//! The wire format of a ticket: claims, their byte layout, and the canonical
//! base64url text. No keys and no time rules live here (see [`crate::keys`]
//! and [`crate::verify`]); `SPEC.md` describes the format byte by byte.

mod claims;
mod codec;

pub use claims::{Binding, Claims, QueueId, ScopeId, TicketId, TicketKind};
pub use codec::{
    decode, encode, mac_input, DecodedTicket, CLAIMS_LEN, DOMAIN_LABEL, ENCODED_LEN, MAC_INPUT_LEN,
    TAG_LEN, TICKET_LEN, VERSION,
};
pub(crate) use codec::{encode_signed, CLAIMS_BINDING, CLAIMS_QUEUE};
