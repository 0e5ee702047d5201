//! The room's HTTP endpoints' building blocks, for the host's join,
//! heartbeat and leave handlers (the demo's are in
//! `examples/reservation.rs`):
//!
//! - [`session`]: signed, server-issued session ids in a cookie that a
//!   cross-site request can neither use nor replace ([`RoomSessions`]);
//! - [`CrossSiteGuard`]: refuses state-changing requests a browser sends for
//!   another site (`cross_site`, 403);
//! - [`TrustedProxies`]: the client's address through the proxies in front
//!   ([`ClientAddr`], keyed by /64 for IPv6), for
//!   [`JoinContext::client_addr`](super::JoinContext::client_addr);
//! - [`PerAddressLimit`]: an example join hook counting joins per address.
//!
//! A join handler, in outline:
//!
//! ```ignore
//! let session = sessions.join(&headers, &uri)?;           // cross_site, or the session
//! let addr = proxies.resolve(peer.ip(), &headers);        // the client's address
//! let request = JoinRequest::new(session.id().as_bytes(), client_time)
//!     .client_addr(addr)
//!     .headers(&headers);
//! let ticket = room.join_with(&request).await?;
//! // answer, with session.set_cookie() if there is one (a new session)
//! ```

mod client_addr;
mod limit;
mod origin;
pub mod session;

pub use client_addr::{ClientAddr, ProxyHeader, TrustedProxies, MAX_HOPS};
pub use limit::PerAddressLimit;
pub use origin::{CrossSite, CrossSiteGuard, CrossSiteReason, SEC_FETCH_SITE};
pub use session::{JoinSession, RoomSessions, SessionKeys, SessionRefusal, SESSION_ID_LEN};
