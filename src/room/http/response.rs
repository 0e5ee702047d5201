//! The answers of the room's endpoints: the JSON of a place, problem
//! documents for refusals, and the body type of
//! [`RoomService`](super::RoomService).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::{Response, StatusCode};
use http_body::{Body, Frame, SizeHint};

use crate::layer::{problem_response, PROBLEM_JSON, PROBLEM_TYPE_PREFIX};
use crate::room::{RoomError, RoomTicket};

/// The body of every answer of [`RoomService`](super::RoomService): one
/// chunk of bytes, already complete (a place's JSON, a problem document,
/// the client script).
#[derive(Debug, Clone, Default)]
pub struct RoomBody {
    data: Option<Bytes>,
}

impl RoomBody {
    /// A body of `data` (an empty one ends at once).
    pub fn new(data: impl Into<Bytes>) -> Self {
        let data: Bytes = data.into();
        Self {
            data: (!data.is_empty()).then_some(data),
        }
    }
}

impl Body for RoomBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.data.take().map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// The 200 answer of a join or heartbeat: `application/json`,
/// `Cache-Control: no-store`, and
/// `{"ticket","position","ahead","admitted","retry_after_ms","estimated_wait_ms","opens_in_ms"}`
/// (`estimated_wait_ms` is `null` while admission is paused).
///
/// ```
/// # use queuegate::room::http::place_response;
/// # fn show(t: &queuegate::room::RoomTicket) {
/// let res = place_response(t);
/// assert_eq!(res.headers()["content-type"], "application/json");
/// # }
/// ```
pub fn place_response(t: &RoomTicket) -> Response<Bytes> {
    let mut json = String::with_capacity(t.ticket.len() + 160);
    json.push_str("{\"ticket\":");
    push_json_str(&mut json, &t.ticket);
    let _ = write!(
        json,
        ",\"position\":{},\"ahead\":{},\"admitted\":{},\"retry_after_ms\":{},\"estimated_wait_ms\":",
        t.position, t.ahead, t.admitted, t.retry_after_ms
    );
    match t.estimated_wait {
        Some(d) => {
            let _ = write!(json, "{}", d.as_millis());
        }
        None => json.push_str("null"),
    }
    let _ = write!(json, ",\"opens_in_ms\":{}}}", t.opens_in_ms);
    json_response(StatusCode::OK, json)
}

/// A JSON answer with `Cache-Control: no-store`.
pub(crate) fn json_response(status: StatusCode, json: String) -> Response<Bytes> {
    let mut res = Response::new(Bytes::from(json));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    res
}

/// The problem document (RFC 9457, `application/problem+json`) for a room
/// error: a ticket refusal is the layer's own document
/// ([`problem_response`]); the room's own refusals (`join_refused`,
/// `room_full`, `busy`, `ended`, `room_closed`, `come_back`, `bad_pass`) have the same fields — `type`, `title`,
/// `status`, `detail` (plain words for the person; for `room_closed`, the
/// operator's message), `code` and, where waiting helps, `retry_after` —
/// (`come_back` adds `retry_after_ms`, the exact wait, and `pass`, to send
/// back in [`DOOR_PASS_HEADER`](crate::room::DOOR_PASS_HEADER))
/// and the `Retry-After` header in whole
/// seconds, rounded up (SPEC §8.6: `Retry-After: 0` would make clients
/// spin). The error itself is put in the response extensions.
///
/// ```
/// use queuegate::room::{http::room_problem_response, RoomError};
///
/// let res = room_problem_response(&RoomError::Busy);
/// assert_eq!(res.status(), 503);
/// assert_eq!(res.headers()["retry-after"], "1"); // 500 ms, rounded up
/// assert_eq!(res.headers()["content-type"], "application/problem+json");
/// ```
pub fn room_problem_response(e: &RoomError) -> Response<Bytes> {
    if let RoomError::Rejected(r) = e {
        let mut res = problem_response(r);
        res.extensions_mut().insert(e.clone());
        return res;
    }
    let status = e.status();
    let code = e.code();
    let retry_after = e.retry_after_ms().map(|ms| ms.div_ceil(1000));
    let title = match e {
        RoomError::Refused { .. } => "Join refused",
        RoomError::Full => "The waiting room is full",
        RoomError::Busy => "Place being set up",
        RoomError::Ended => "Place in the queue ended",
        RoomError::Closed { .. } => "The waiting room is closed",
        RoomError::ComeBack { .. } => "Come back in a moment",
        RoomError::BadPass => "Pass not valid",
        _ => "Could not join the queue",
    };
    let mut json = String::with_capacity(256);
    let _ = write!(
        json,
        "{{\"type\":\"{PROBLEM_TYPE_PREFIX}{code}\",\"title\":"
    );
    push_json_str(&mut json, title);
    let _ = write!(json, ",\"status\":{},\"detail\":", status.as_u16());
    push_json_str(&mut json, &e.to_string());
    let _ = write!(json, ",\"code\":\"{code}\"");
    if let Some(secs) = retry_after {
        let _ = write!(json, ",\"retry_after\":{secs}");
    }
    if let RoomError::ComeBack { pass } = e {
        // The exact wait, and the pass to send back (`queue-door-pass`).
        let _ = write!(
            json,
            ",\"retry_after_ms\":{},\"pass\":",
            pass.retry_after_ms
        );
        push_json_str(&mut json, &pass.pass);
    }
    json.push('}');
    let mut res = Response::new(Bytes::from(json));
    *res.status_mut() = status;
    let h = res.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = retry_after {
        h.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    res.extensions_mut().insert(e.clone());
    res
}

/// Appends `s` as a JSON string.
pub(crate) fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejection::Rejection;

    fn doc(res: &Response<Bytes>) -> serde_json::Value {
        serde_json::from_slice(res.body()).expect("valid JSON")
    }

    #[test]
    fn every_room_error_is_a_problem_document_with_its_code() {
        let errors = [
            RoomError::Rejected(Rejection::Missing),
            RoomError::Rejected(Rejection::StoreUnavailable {
                retry_after_ms: 1_001,
            }),
            RoomError::Refused {
                reason: "too many \"joins\" from your network",
                retry_after_ms: Some(2_500),
            },
            RoomError::Refused {
                reason: "no",
                retry_after_ms: None,
            },
            RoomError::Full,
            RoomError::Busy,
            RoomError::Ended,
            RoomError::Closed {
                message: "Sold out. Thank you for \"waiting\".".into(),
            },
            RoomError::ComeBack {
                pass: crate::room::DoorPass {
                    pass: "p".repeat(44),
                    at_ms: 1_700_000_002_500,
                    retry_after_ms: 2_500,
                },
            },
            RoomError::BadPass,
        ];
        for e in errors {
            let res = room_problem_response(&e);
            let d = doc(&res);
            assert_eq!(res.status(), e.status(), "{e:?}");
            assert_eq!(d["code"], e.code());
            assert_eq!(d["status"], e.status().as_u16());
            assert_eq!(d["detail"], e.to_string());
            assert_eq!(res.headers()[CONTENT_TYPE], PROBLEM_JSON);
            let secs = e.retry_after_ms().map(|ms| ms.div_ceil(1000));
            assert_eq!(
                res.headers()
                    .get(RETRY_AFTER)
                    .map(|v| v.to_str().unwrap().parse::<u64>().unwrap()),
                secs,
                "{e:?}"
            );
            assert_eq!(d.get("retry_after").and_then(|v| v.as_u64()), secs);
            assert_eq!(res.extensions().get::<RoomError>(), Some(&e));
            if let RoomError::ComeBack { pass } = &e {
                assert_eq!(d["pass"], pass.pass.as_str());
                assert_eq!(d["retry_after_ms"], 2_500);
                assert!(d["detail"].as_str().unwrap().contains("about 3 s"));
            }
        }
    }
}
