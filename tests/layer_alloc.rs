//! A refused request allocates nothing beyond its response, whatever the
//! size of the garbage it carries (threat T2/T11: a flood of bad tickets
//! must cost no more than a MAC check and never grow with input size).
//!
//! A counting global allocator counts, per thread, the allocations made
//! while the layer handles one request, and compares them with the
//! allocations of building the same rejection response alone.

mod layer_support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll};

use http::{HeaderValue, Request, Response};
use layer_support::*;
use queuegate::layer::{problem_response, QueueGateBody, QueueGateLayer};
use queuegate::{MalformedReason, Policy, Rejection};
use tower::{Layer, Service};

struct Counting;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = ON.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
            let _ = BYTES.try_with(|b| b.set(b.get() + size));
        }
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// (allocations, bytes) made by `f` on this thread.
fn count<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    COUNT.with(|c| c.set(0));
    BYTES.with(|b| b.set(0));
    ON.with(|on| on.set(true));
    let out = f();
    ON.with(|on| on.set(false));
    (out, COUNT.with(Cell::get), BYTES.with(Cell::get))
}

type Svc = queuegate::QueueGate<
    tower::util::ServiceFn<
        fn(Request<()>) -> std::future::Ready<Result<Response<String>, Infallible>>,
    >,
    queuegate::ManualClock,
    queuegate::MemoryReplayStore,
    queuegate::layer::TicketLocation,
    queuegate::layer::SessionCookie,
    queuegate::layer::ClientTimeHeader,
    (),
    (),
>;

fn inner(_: Request<()>) -> std::future::Ready<Result<Response<String>, Infallible>> {
    std::future::ready(Ok(Response::new(String::from("booked"))))
}

fn service(fx: &Fixture, cookie_ticket: bool) -> Svc {
    let mut builder = QueueGateLayer::builder(fx.verifier(Policy::new(QUEUE)));
    if cookie_ticket {
        builder = builder.ticket_cookie("queue_ticket").unwrap();
    }
    let f: fn(Request<()>) -> _ = inner;
    builder.build().unwrap().layer(tower::service_fn(f))
}

/// Handles `req` and returns the response with the allocations it took.
fn handle(svc: &mut Svc, req: Request<()>) -> (Response<QueueGateBody<String>>, usize, usize) {
    // The waker is made outside the count (it is an `Arc`).
    let waker = noop_waker();
    count(|| {
        let mut cx = Context::from_waker(&waker);
        let mut future = std::pin::pin!(svc.call(req));
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(res) => res.unwrap(),
            Poll::Pending => panic!("the memory store answers at once"),
        }
    })
}

/// What building the response alone allocates.
fn baseline(r: &Rejection) -> (usize, usize) {
    let (_, n, b) = count(|| problem_response(r).map(QueueGateBody::<String>::problem));
    (n, b)
}

fn garbage(len: usize) -> String {
    "A".repeat(len)
}

#[test]
fn rejected_requests_allocate_only_their_response() {
    let fx = Fixture::new();
    let mut svc = service(&fx, false);
    let length = Rejection::Malformed {
        reason: MalformedReason::Length,
    };
    let (base_n, base_b) = baseline(&length);
    assert!(base_n > 0, "the counter counts");

    let mut seen = Vec::new();
    for len in [200, 100 * 1024] {
        let req = Request::get("/book")
            .header("queue-ticket", garbage(len))
            .header("cookie", cookie(SESSION))
            .body(())
            .unwrap();
        let (res, n, b) = handle(&mut svc, req);
        assert_eq!(res.extensions().get::<Rejection>(), Some(&length));
        assert_eq!((n, b), (base_n, base_b), "{len}-byte garbage ticket");
        seen.push((n, b));
    }
    assert_eq!(seen[0], seen[1], "allocations do not grow with the ticket");
    println!("rejected request: {base_n} allocations, {base_b} bytes (the response)");

    // Missing, and a well-formed ticket with a bad tag: also just the response.
    let req = Request::get("/book").body(()).unwrap();
    let (res, n, b) = handle(&mut svc, req);
    assert_eq!(
        res.extensions().get::<Rejection>(),
        Some(&Rejection::Missing)
    );
    assert_eq!((n, b), baseline(&Rejection::Missing));

    let forged = tamper(&fx.admitted(SESSION));
    let req = Request::get("/book")
        .header("queue-ticket", forged)
        .header("cookie", cookie(SESSION))
        .body(())
        .unwrap();
    let (res, n, b) = handle(&mut svc, req);
    assert_eq!(
        res.extensions().get::<Rejection>(),
        Some(&Rejection::BadSignature)
    );
    assert_eq!((n, b), baseline(&Rejection::BadSignature));
}

#[test]
fn huge_or_numerous_cookies_cost_the_same() {
    let fx = Fixture::new();
    let mut svc = service(&fx, true);
    let length = Rejection::Malformed {
        reason: MalformedReason::Length,
    };
    let base = baseline(&length);

    // One megabyte-sized cookie header.
    let big = format!("{}; queue_ticket={}", cookie(SESSION), garbage(1024 * 1024));
    let req = Request::get("/book")
        .header("cookie", big)
        .body(())
        .unwrap();
    let (res, n, b) = handle(&mut svc, req);
    assert_eq!(res.extensions().get::<Rejection>(), Some(&length));
    assert_eq!((n, b), base);

    // Thousands of cookie lines.
    let mut req = Request::get("/book").body(()).unwrap();
    for i in 0..5_000 {
        let v = HeaderValue::from_str(&format!("c{i}=v")).unwrap();
        req.headers_mut().append("cookie", v);
    }
    let (res, n, b) = handle(&mut svc, req);
    assert_eq!(res.extensions().get::<Rejection>(), Some(&length));
    assert_eq!((n, b), base);
}

#[test]
fn an_admitted_request_allocates_a_bounded_amount() {
    // Not a rejection, but the other half of the hot path: verified claims
    // into the request extensions, and the inner service's response.
    let fx = Fixture::new();
    let mut svc = service(&fx, false);
    let t = fx.admitted(SESSION);
    let mut counts = Vec::new();
    for _ in 0..3 {
        let req = Request::get("/book")
            .header("queue-ticket", t.as_str())
            .header("cookie", cookie(SESSION))
            .body(())
            .unwrap();
        let (res, n, _) = handle(&mut svc, req);
        assert_eq!(res.status(), 200);
        counts.push(n);
    }
    // The first request creates the chain's replay record; later ones
    // allocate the same each time.
    assert_eq!(counts[1], counts[2]);
    println!("admitted request (repeat): {} allocations", counts[2]);
}
