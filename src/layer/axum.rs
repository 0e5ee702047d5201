//! The axum extractor for the verified ticket (feature `axum`).

use axum_core::extract::{FromRequestParts, OptionalFromRequestParts};
use axum_core::response::{IntoResponse, Response};
use http::request::Parts;
use http::StatusCode;

use crate::verify::Verified;

/// Extracts the [`Verified`] ticket that [`QueueGateLayer`](super::QueueGateLayer)
/// put in the request extensions.
///
/// Fails with [`MissingQueueTicket`] (500) when there is none: the layer is
/// not installed on this route, or monitor mode let through a request
/// without a valid ticket. Use `Option<QueueTicket>` on routes where both
/// are expected.
///
/// ```
/// use queuegate::layer::QueueTicket;
///
/// async fn book(QueueTicket(ticket): QueueTicket) -> String {
///     format!("booked for chain {}", ticket.claims.ticket_id)
/// }
/// # let _ = book;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueTicket(pub Verified);

/// The rejection of [`QueueTicket`]: no verified ticket in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "no verified queue ticket in the request extensions: is QueueGateLayer installed on this \
     route (and in enforce mode)?"
)]
pub struct MissingQueueTicket;

impl IntoResponse for MissingQueueTicket {
    fn into_response(self) -> Response {
        (StatusCode::INTERNAL_SERVER_ERROR, self.to_string()).into_response()
    }
}

impl<S: Send + Sync> FromRequestParts<S> for QueueTicket {
    type Rejection = MissingQueueTicket;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Verified>()
            .cloned()
            .map(QueueTicket)
            .ok_or(MissingQueueTicket)
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for QueueTicket {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Verified>().cloned().map(QueueTicket))
    }
}
