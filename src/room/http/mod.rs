//! The room's HTTP endpoints: [`RoomService`] (built by
//! [`RoomEndpoints`]) answers join, heartbeat, leave, status and the
//! client script as one tower service, with the contract the README
//! states; [`place_response`] and [`room_problem_response`] are its
//! answers. Its building blocks, for a host that writes its own handlers:
//!
//! - [`session`]: signed, server-issued session ids in a cookie that a
//!   cross-site request can neither use nor replace ([`RoomSessions`]);
//! - [`CrossSiteGuard`]: refuses state-changing requests a browser sends for
//!   another site (`cross_site`, 403);
//! - [`TrustedProxies`]: the client's address through the proxies in front
//!   ([`ClientAddr`], keyed by /64 for IPv6), for
//!   [`JoinContext::client_addr`](super::JoinContext::client_addr);
//! - [`PerAddressLimit`]: an example join hook counting joins per address;
//! - [`CLIENT_JS`]: the browser client (an ES module) the host serves to
//!   its waiting-room page.
//!
//! A join handler, whatever the web framework:
//!
//! ```
//! use std::net::IpAddr;
//! use http::{HeaderMap, Response, Uri};
//! use queuegate::room::http::{RoomSessions, TrustedProxies};
//! use queuegate::room::{JoinHook, JoinRequest, RoomState, WaitingRoom};
//! use queuegate::{ClientTime, Clock, ReplayStore};
//!
//! async fn join<C: Clock, S: ReplayStore, R: RoomState, H: JoinHook>(
//!     room: &WaitingRoom<C, S, R, H>,
//!     sessions: &RoomSessions,
//!     proxies: &TrustedProxies,
//!     peer: IpAddr,
//!     headers: &HeaderMap,
//!     uri: &Uri,
//!     client_time: ClientTime,
//! ) -> Response<bytes::Bytes> {
//!     // Cross-site requests and unreadable session cookies stop here,
//!     // with a problem document and no cookie.
//!     let session = match sessions.join(headers, uri) {
//!         Ok(session) => session,
//!         Err(refused) => return refused.problem_response(),
//!     };
//!     let request = JoinRequest::new(session.id().as_bytes(), client_time)
//!         .client_addr(proxies.resolve(peer, headers))
//!         .headers(headers);
//!     match room.join_with(&request).await {
//!         Ok(ticket) => {
//!             let mut res = Response::new(bytes::Bytes::from(ticket.ticket));
//!             // Only a new session gets a cookie: a live one is never replaced.
//!             if let Some(cookie) = session.set_cookie() {
//!                 res.headers_mut().insert(http::header::SET_COOKIE, cookie.clone());
//!             }
//!             res
//!         }
//!         Err(e) => {
//!             let mut res = Response::new(bytes::Bytes::from(e.to_string()));
//!             *res.status_mut() = e.status();
//!             res
//!         }
//!     }
//! }
//! ```

pub mod admin;
mod client;
mod client_addr;
mod limit;
mod origin;
mod response;
mod service;
pub mod session;

pub use crate::room::DOOR_PASS_HEADER;
pub use client::CLIENT_JS;
pub use client_addr::{ClientAddr, ProxyHeader, TrustedProxies, MAX_HOPS};
pub use limit::PerAddressLimit;
pub use origin::{CrossSite, CrossSiteGuard, CrossSiteReason, SEC_FETCH_SITE};
pub use response::{place_response, room_problem_response, RoomBody};
pub use service::{
    PeerAddr, RoomEndpoints, RoomFuture, RoomService, SessionSource, CLIENT_TIME_HEADER,
    TICKET_HEADER,
};
pub use session::{JoinSession, RoomSessions, SessionKeys, SessionRefusal, SESSION_ID_LEN};
