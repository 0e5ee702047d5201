//! Hostile HTTP through the real layer (threats T1, T2, T11): duplicate
//! ticket headers, a header and a cookie that disagree, non-UTF-8 bytes, a
//! 1 MB header, thousands of cookies, a ticket in the query string when
//! that is not allowed. Each is refused with its code and status, and none
//! changes state: the store holds as many records after as before, and the
//! valid ticket used in the attack is still unconsumed.

mod adversary;

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode};
use queuegate::layer::QueueGateLayer;
use queuegate::{
    MalformedReason, ManualClock, MemoryReplayStore, Metrics, Policy, Rejection, RejectionCode,
    ReplayMode,
};
use tower::{ServiceBuilder, ServiceExt};

use adversary::*;

type Layer = QueueGateLayer<ManualClock, MemoryReplayStore>;

struct Gate {
    f: Fixture<MemoryReplayStore>,
    layer: Layer,
    /// The layer reads tickets from cookies only.
    ticket_in_cookie: bool,
}

fn single_use() -> Policy {
    Policy::new(QUEUE)
        .scope("reserve")
        .replay(ReplayMode::SingleUse)
}

impl Gate {
    fn new(
        configure: impl FnOnce(Fixture<MemoryReplayStore>) -> (Fixture<MemoryReplayStore>, Layer),
    ) -> Self {
        let f = Fixture::new(
            Arc::new(MemoryReplayStore::new()),
            single_use(),
            ManualClock::new(NOW_MS),
        );
        let (f, layer) = configure(f);
        Self {
            f,
            layer,
            ticket_in_cookie: false,
        }
    }

    fn default_layer() -> Self {
        Self::new(|f| {
            let layer = QueueGateLayer::new(f.verifier.clone());
            (f, layer)
        })
    }

    /// The ticket in the default header or in cookie `queue_ticket`.
    fn header_or_cookie() -> Self {
        Self::new(|f| {
            let layer = QueueGateLayer::builder(f.verifier.clone())
                .ticket_cookie("queue_ticket")
                .unwrap()
                .build()
                .unwrap();
            (f, layer)
        })
    }

    async fn send(&self, req: Request<()>) -> Response<()> {
        let svc =
            ServiceBuilder::new()
                .layer(self.layer.clone())
                .service_fn(|_req: Request<()>| async {
                    Ok::<_, Infallible>(Response::new(String::from("booked")))
                });
        let resp = svc.oneshot(req).await.unwrap();
        let (parts, _body) = resp.into_parts();
        Response::from_parts(parts, ())
    }

    fn metrics(&self) -> &Metrics {
        self.layer.metrics()
    }

    /// Sends `req`, expects `rejection`, and checks nothing grew.
    async fn refuses(&self, req: Request<()>, expected: Rejection, what: &str) {
        let before = self.f.store.len();
        let counted = self.metrics().snapshot().rejections(expected.code());
        let resp = self.send(req).await;
        assert_eq!(resp.status(), expected.status(), "{what}");
        assert_eq!(
            resp.extensions().get::<Rejection>(),
            Some(&expected),
            "{what}"
        );
        assert_eq!(self.f.store.len(), before, "{what}: the store grew");
        assert_eq!(
            self.metrics().snapshot().rejections(expected.code()),
            counted + 1,
            "{what}: not counted"
        );
    }

    /// The valid ticket still works once: the attack consumed nothing.
    async fn still_unconsumed(&self, ticket: &str, session: &str) {
        let request = |ticket: &str, session: &str| {
            if self.ticket_in_cookie {
                Request::builder()
                    .uri("/reserve")
                    .header(
                        "cookie",
                        format!("qg_session={session}; queue_ticket={ticket}"),
                    )
                    .body(())
                    .unwrap()
            } else {
                request(ticket, session)
            }
        };
        let resp = self.send(request(ticket, session)).await;
        assert_eq!(
            resp.status(),
            StatusCode::OK,
            "the ticket was consumed by the attack"
        );
        let resp = self.send(request(ticket, session)).await;
        assert_eq!(resp.status(), StatusCode::CONFLICT, "single use");
    }
}

fn cookie(session: &str) -> String {
    format!("qg_session={session}")
}

fn request(ticket: &str, session: &str) -> Request<()> {
    Request::builder()
        .uri("/reserve")
        .header("queue-ticket", ticket)
        .header("cookie", cookie(session))
        .body(())
        .unwrap()
}

fn malformed(reason: MalformedReason) -> Rejection {
    Rejection::Malformed { reason }
}

#[tokio::test]
async fn two_ticket_headers_are_ambiguous() {
    let g = Gate::default_layer();
    let t = g.f.admitted(b"me");
    let other = g.f.admitted(b"me");
    for (what, first, second) in [
        ("same ticket twice", t.ticket.as_str(), t.ticket.as_str()),
        (
            "two valid tickets",
            t.ticket.as_str(),
            other.ticket.as_str(),
        ),
        ("valid then garbage", t.ticket.as_str(), "garbage"),
        ("garbage then valid", "garbage", t.ticket.as_str()),
        ("a ticket split in two", &t.ticket[..88], &t.ticket[88..]),
    ] {
        let req = Request::builder()
            .uri("/reserve")
            .header("queue-ticket", first)
            .header("Queue-Ticket", second)
            .header("cookie", cookie("me"))
            .body(())
            .unwrap();
        g.refuses(req, malformed(MalformedReason::Ambiguous), what)
            .await;
    }
    g.still_unconsumed(&t.ticket, "me").await;
    g.still_unconsumed(&other.ticket, "me").await;
}

#[tokio::test]
async fn header_and_cookie_must_agree() {
    let g = Gate::header_or_cookie();
    let t = g.f.admitted(b"me");
    let other = g.f.admitted(b"me");
    for (what, cookie_value) in [
        ("another valid ticket", other.ticket.as_str()),
        ("a tampered copy", &format!("{}A", &t.ticket[..175])),
        ("garbage", "x"),
    ] {
        let req = Request::builder()
            .uri("/reserve")
            .header("queue-ticket", &t.ticket)
            .header(
                "cookie",
                format!("qg_session=me; queue_ticket={cookie_value}"),
            )
            .body(())
            .unwrap();
        g.refuses(req, malformed(MalformedReason::Ambiguous), what)
            .await;
    }
    // The same ticket twice in cookies, disagreeing, is ambiguous too.
    let req = Request::builder()
        .uri("/reserve")
        .header(
            "cookie",
            format!(
                "qg_session=me; queue_ticket={}; queue_ticket={}",
                t.ticket, other.ticket
            ),
        )
        .body(())
        .unwrap();
    g.refuses(req, malformed(MalformedReason::Ambiguous), "two cookies")
        .await;
    // Agreeing header and cookie are one ticket.
    let req = Request::builder()
        .uri("/reserve")
        .header("queue-ticket", &t.ticket)
        .header(
            "cookie",
            format!("qg_session=me; queue_ticket={}", t.ticket),
        )
        .body(())
        .unwrap();
    assert_eq!(g.send(req).await.status(), StatusCode::OK);
    g.still_unconsumed(&other.ticket, "me").await;
}

#[tokio::test]
async fn non_utf8_bytes_are_refused() {
    let g = Gate::default_layer();
    let t = g.f.admitted(b"me");
    // Latin-1 and invalid UTF-8, at a ticket's length and shorter.
    let mut same_len = t.ticket.clone().into_bytes();
    same_len[40] = 0xff;
    same_len[41] = 0xfe;
    for (what, bytes, reason) in [
        (
            "invalid UTF-8, ticket length",
            same_len,
            MalformedReason::Encoding,
        ),
        ("Latin-1 text", b"caf\xe9".to_vec(), MalformedReason::Length),
        ("all high bytes", vec![0xc3; 176], MalformedReason::Encoding),
    ] {
        let req = Request::builder()
            .uri("/reserve")
            .header("queue-ticket", HeaderValue::from_bytes(&bytes).unwrap())
            .header("cookie", cookie("me"))
            .body(())
            .unwrap();
        g.refuses(req, malformed(reason), what).await;
    }
    // Non-UTF-8 in the session cookie: no binding the ticket matches.
    let req = Request::builder()
        .uri("/reserve")
        .header("queue-ticket", &t.ticket)
        .header(
            "cookie",
            HeaderValue::from_bytes(b"qg_session=m\xe9").unwrap(),
        )
        .body(())
        .unwrap();
    g.refuses(req, Rejection::BindingMismatch, "non-UTF-8 session")
        .await;
    // Non-UTF-8 in the client-time header: not epoch milliseconds.
    let req = Request::builder()
        .uri("/reserve")
        .header("queue-ticket", &t.ticket)
        .header("cookie", cookie("me"))
        .header(
            "queue-client-time",
            HeaderValue::from_bytes(b"17\xff").unwrap(),
        )
        .body(())
        .unwrap();
    g.refuses(
        req,
        malformed(MalformedReason::ClientTime),
        "non-UTF-8 clock",
    )
    .await;
    g.still_unconsumed(&t.ticket, "me").await;
}

#[tokio::test]
async fn a_one_megabyte_header_is_refused() {
    let g = Gate::header_or_cookie();
    let t = g.f.admitted(b"me");
    let mb = "A".repeat(1 << 20);
    // A 1 MB ticket header.
    let req = Request::builder()
        .uri("/reserve")
        .header("queue-ticket", &mb)
        .header("cookie", cookie("me"))
        .body(())
        .unwrap();
    g.refuses(
        req,
        malformed(MalformedReason::Length),
        "1 MB ticket header",
    )
    .await;
    // A valid ticket that is a prefix of 1 MB of text.
    let long = format!("{}{}", t.ticket, mb);
    let req = Request::builder()
        .uri("/reserve")
        .header("queue-ticket", &long)
        .header("cookie", cookie("me"))
        .body(())
        .unwrap();
    g.refuses(req, malformed(MalformedReason::Length), "ticket + 1 MB")
        .await;
    // A 1 MB cookie header while the ticket may come from a cookie.
    let req = Request::builder()
        .uri("/reserve")
        .header("queue-ticket", &t.ticket)
        .header("cookie", format!("qg_session=me; big={mb}"))
        .body(())
        .unwrap();
    g.refuses(req, malformed(MalformedReason::Length), "1 MB cookie")
        .await;
    // A 1 MB client-time header.
    let req = Request::builder()
        .uri("/reserve")
        .header("queue-ticket", &t.ticket)
        .header("cookie", cookie("me"))
        .header("queue-client-time", "1".repeat(1 << 20))
        .body(())
        .unwrap();
    g.refuses(req, malformed(MalformedReason::ClientTime), "1 MB clock")
        .await;
    g.still_unconsumed(&t.ticket, "me").await;
}

#[tokio::test]
async fn thousands_of_cookies_are_refused() {
    let many: String = (0..5_000).map(|i| format!("c{i}=v{i}; ")).collect();
    // The ticket looked for in a cookie: the header is too large to scan.
    let mut g = Gate::new(|f| {
        let layer = QueueGateLayer::builder(f.verifier.clone())
            .no_ticket_header()
            .ticket_cookie("queue_ticket")
            .unwrap()
            .build()
            .unwrap();
        (f, layer)
    });
    g.ticket_in_cookie = true;
    let t = g.f.admitted(b"me");
    let req = Request::builder()
        .uri("/reserve")
        .header(
            "cookie",
            format!("{many}qg_session=me; queue_ticket={}", t.ticket),
        )
        .body(())
        .unwrap();
    g.refuses(
        req,
        malformed(MalformedReason::Length),
        "5000 cookies, one line",
    )
    .await;
    // Thousands of cookie header lines.
    let mut req = Request::builder().uri("/reserve").body(()).unwrap();
    for i in 0..2_000 {
        req.headers_mut()
            .append("cookie", HeaderValue::from_str(&format!("c{i}=v")).unwrap());
    }
    req.headers_mut().append(
        "cookie",
        HeaderValue::from_str(&format!("qg_session=me; queue_ticket={}", t.ticket)).unwrap(),
    );
    g.refuses(req, malformed(MalformedReason::Length), "2000 cookie lines")
        .await;
    g.still_unconsumed(&t.ticket, "me").await;

    // The ticket in a header, the session in the huge cookie header: no
    // binding can be read, so the ticket is not this client's.
    let g = Gate::default_layer();
    let t = g.f.admitted(b"me");
    let req = Request::builder()
        .uri("/reserve")
        .header("queue-ticket", &t.ticket)
        .header("cookie", format!("{many}qg_session=me"))
        .body(())
        .unwrap();
    g.refuses(req, Rejection::BindingMismatch, "5000 cookies, session")
        .await;
    g.still_unconsumed(&t.ticket, "me").await;
}

#[tokio::test]
async fn a_ticket_in_the_query_string_is_missing_unless_allowed() {
    let g = Gate::default_layer();
    let t = g.f.admitted(b"me");
    for name in ["queue_ticket", "queue-ticket", "ticket", "qt"] {
        let req = Request::builder()
            .uri(format!("/reserve?{name}={}", t.ticket))
            .header("cookie", cookie("me"))
            .body(())
            .unwrap();
        g.refuses(req, Rejection::Missing, name).await;
    }
    g.still_unconsumed(&t.ticket, "me").await;

    // Opted in: the query string is read, and must agree with the header.
    let g = Gate::new(|f| {
        let layer = QueueGateLayer::builder(f.verifier.clone())
            .allow_query_ticket("queue_ticket")
            .unwrap()
            .build()
            .unwrap();
        (f, layer)
    });
    let t = g.f.admitted(b"me");
    let other = g.f.admitted(b"me");
    let req = Request::builder()
        .uri(format!("/reserve?queue_ticket={}", other.ticket))
        .header("queue-ticket", &t.ticket)
        .header("cookie", cookie("me"))
        .body(())
        .unwrap();
    g.refuses(
        req,
        malformed(MalformedReason::Ambiguous),
        "query and header",
    )
    .await;
    let huge_query = format!("/reserve?x={}&queue_ticket={}", "a".repeat(4096), t.ticket);
    let req = Request::builder()
        .uri(huge_query)
        .header("cookie", cookie("me"))
        .body(())
        .unwrap();
    g.refuses(req, malformed(MalformedReason::Length), "4 KiB query")
        .await;
    let req = Request::builder()
        .uri(format!("/reserve?queue_ticket={}", t.ticket))
        .header("cookie", cookie("me"))
        .body(())
        .unwrap();
    assert_eq!(g.send(req).await.status(), StatusCode::OK);
    g.still_unconsumed(&other.ticket, "me").await;
}

#[tokio::test]
async fn every_refusal_is_counted_and_nothing_else_is() {
    let g = Gate::default_layer();
    let t = g.f.admitted(b"me");
    let before = g.metrics().snapshot();
    let n = 50u64;
    for i in 0..n {
        let req = Request::builder()
            .uri("/reserve")
            .header("queue-ticket", format!("garbage-{i}"))
            .header("cookie", cookie("me"))
            .body(())
            .unwrap();
        assert_eq!(g.send(req).await.status(), StatusCode::BAD_REQUEST);
    }
    let after = g.metrics().snapshot();
    assert_eq!(
        after.rejections(RejectionCode::Malformed) - before.rejections(RejectionCode::Malformed),
        n
    );
    assert_eq!(after.rejections_total() - before.rejections_total(), n);
    assert_eq!(after.admissions, before.admissions);
    assert!(g.f.store.is_empty());
    g.still_unconsumed(&t.ticket, "me").await;
}
