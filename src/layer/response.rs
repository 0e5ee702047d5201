//! The default rejection response (RFC 9457 problem details) and the
//! response body type of the layer.

use std::fmt::Write as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER};
use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::rejection::Rejection;

/// The media type of the default rejection body (RFC 9457).
pub const PROBLEM_JSON: &str = "application/problem+json";

/// The `type` URI of the problem document for a rejection code: a URN that
/// names the code (RFC 9457 allows a `type` that is not dereferenceable).
pub const PROBLEM_TYPE_PREFIX: &str = "urn:queuegate:problem:";

/// The default response for a rejection: status from
/// [`Rejection::status`], an `application/problem+json` body (RFC 9457)
/// with `type`, `title`, `status`, `detail` (the message for the person in
/// the queue), `code` (the stable machine code) and, where waiting helps,
/// `retry_after` in seconds; the `Retry-After` header (seconds, rounded up)
/// for `not_admitted` and `store_unavailable`; `Cache-Control: no-store`.
/// The rejection itself is put in the response extensions.
///
/// The ticket is never echoed. Hooks can call this and adjust the result
/// (add a `Location`, convert the body with `Response::map`).
///
/// ```
/// use queuegate::layer::problem_response;
/// use queuegate::Rejection;
///
/// let res = problem_response(&Rejection::NotAdmitted { retry_after_ms: 1_500 });
/// assert_eq!(res.status(), 429);
/// assert_eq!(res.headers()["retry-after"], "2");
/// assert_eq!(res.headers()["content-type"], "application/problem+json");
/// let body = std::str::from_utf8(res.body()).unwrap();
/// assert!(body.contains(r#""code":"not_admitted""#));
/// ```
pub fn problem_response(rejection: &Rejection) -> Response<Bytes> {
    let code = rejection.code();
    let status = rejection.status();
    let retry_after = rejection.retry_after_ms().map(|ms| ms.div_ceil(1000));

    let mut json = String::with_capacity(320);
    json.push_str("{\"type\":\"");
    json.push_str(PROBLEM_TYPE_PREFIX);
    json.push_str(code.as_str());
    json.push_str("\",\"title\":");
    push_json_str(&mut json, code.title());
    // Writing into a String cannot fail.
    let _ = write!(json, ",\"status\":{},\"detail\":", status.as_u16());
    json.push('"');
    let _ = write!(JsonEscaped(&mut json), "{rejection}");
    json.push('"');
    json.push_str(",\"code\":\"");
    json.push_str(code.as_str());
    json.push('"');
    if let Some(secs) = retry_after {
        let _ = write!(json, ",\"retry_after\":{secs}");
    }
    json.push('}');

    let mut response = Response::new(Bytes::from(json));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(secs) = retry_after {
        headers.insert(RETRY_AFTER, HeaderValue::from(secs));
    }
    response.extensions_mut().insert(rejection.clone());
    response
}

fn push_json_str(out: &mut String, s: &str) {
    out.push('"');
    let _ = JsonEscaped(out).write_str(s);
    out.push('"');
}

/// Writes into a string with JSON string escaping.
struct JsonEscaped<'a>(&'a mut String);

impl std::fmt::Write for JsonEscaped<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        for c in s.chars() {
            match c {
                '"' => self.0.push_str("\\\""),
                '\\' => self.0.push_str("\\\\"),
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                '\t' => self.0.push_str("\\t"),
                c if (c as u32) < 0x20 => {
                    let _ = write!(self.0, "\\u{:04x}", c as u32);
                }
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

pin_project! {
    /// The response body of [`QueueGate`](crate::layer::QueueGate): the
    /// inner service's body, or the layer's own problem document.
    ///
    /// This is the tower-http way to stay generic over the response body
    /// (compare `tower_http::limit::ResponseBody`): the layer needs no
    /// `From` or `Default` bound on the inner body, and a host's
    /// [`OnReject`](crate::layer::OnReject) hook answers with the inner
    /// body type.
    // pin-project-lite takes no attributes on enum fields: the variants'
    // docs say what their single field is.
    #[allow(missing_docs)]
    #[project = QueueGateBodyProj]
    #[derive(Debug)]
    pub enum QueueGateBody<B> {
        /// The inner service's body (or a hook's response), in `body`.
        Inner {
            #[pin]
            body: B,
        },
        /// The layer's problem document: `data` holds the bytes not sent yet.
        Problem {
            data: Option<Bytes>,
        },
    }
}

impl<B> QueueGateBody<B> {
    /// Wraps the inner service's body.
    pub fn inner(body: B) -> Self {
        Self::Inner { body }
    }

    /// A body of the given bytes (an empty `Bytes` ends at once).
    pub fn problem(data: Bytes) -> Self {
        Self::Problem {
            data: (!data.is_empty()).then_some(data),
        }
    }
}

impl<B> Body for QueueGateBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project() {
            QueueGateBodyProj::Inner { body } => body.poll_frame(cx),
            QueueGateBodyProj::Problem { data } => {
                Poll::Ready(data.take().map(|d| Ok(Frame::data(d))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Inner { body } => body.is_end_stream(),
            Self::Problem { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Inner { body } => body.size_hint(),
            Self::Problem { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejection::{MalformedReason, RejectionCode, ReplayReason};
    use crate::ticket::TicketId;

    fn json(res: &Response<Bytes>) -> serde_json::Value {
        serde_json::from_slice(res.body()).expect("valid JSON")
    }

    #[test]
    fn every_code_gives_a_valid_problem_document() {
        let samples = [
            Rejection::Missing,
            Rejection::Malformed {
                reason: MalformedReason::Ambiguous,
            },
            Rejection::BadSignature,
            Rejection::UnknownKey { key_id: 9 },
            Rejection::NotAdmitted {
                retry_after_ms: 1_001,
            },
            Rejection::Expired { expired_for_ms: 5 },
            Rejection::OfflineResumed { late_by_ms: 1 },
            Rejection::Replayed {
                reason: ReplayReason::ConsumedBySameClient,
                ticket_id: TicketId([7; 16]),
            },
            Rejection::ClockSkew {
                offset_ms: -240_000,
                tolerance_ms: 60_000,
            },
            Rejection::ClockJump {
                moved_ms: 90_000,
                tolerance_ms: 60_000,
            },
            Rejection::BindingMismatch,
            Rejection::WrongQueue,
            Rejection::StoreUnavailable {
                retry_after_ms: 2_000,
            },
            Rejection::InProgress {
                retry_after_ms: 14_500,
            },
        ];
        assert_eq!(samples.len(), RejectionCode::COUNT);
        for r in &samples {
            let res = problem_response(r);
            let v = json(&res);
            let code = r.code().as_str();
            assert_eq!(v["code"], code);
            assert_eq!(v["type"], format!("urn:queuegate:problem:{code}"));
            assert_eq!(v["title"], r.code().title());
            assert_eq!(v["status"], res.status().as_u16());
            assert_eq!(v["detail"], r.to_string());
            assert_eq!(res.status(), r.status());
            assert_eq!(res.headers()[CONTENT_TYPE], PROBLEM_JSON);
            assert_eq!(res.extensions().get::<Rejection>(), Some(r));
            match r.retry_after_ms() {
                Some(ms) => {
                    let secs = ms.div_ceil(1000);
                    assert_eq!(res.headers()[RETRY_AFTER], secs.to_string().as_str());
                    assert_eq!(v["retry_after"], secs);
                }
                None => assert!(res.headers().get(RETRY_AFTER).is_none()),
            }
        }
    }

    #[test]
    fn retry_after_rounds_up() {
        let res = problem_response(&Rejection::NotAdmitted {
            retry_after_ms: 1_001,
        });
        assert_eq!(res.headers()[RETRY_AFTER], "2");
        let res = problem_response(&Rejection::StoreUnavailable {
            retry_after_ms: 1_000,
        });
        assert_eq!(res.headers()[RETRY_AFTER], "1");
    }

    #[test]
    fn json_escaping() {
        let mut s = String::new();
        push_json_str(&mut s, "a\"b\\c\nd\u{1}");
        assert_eq!(s, r#""a\"b\\c\nd\u0001""#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}");
    }
}
