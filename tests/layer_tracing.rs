//! With feature `tracing`, rejections and monitored findings are events
//! that name the code and never carry the ticket.
#![cfg(feature = "tracing")]

mod layer_support;

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use http::{Request, Response};
use layer_support::*;
use queuegate::layer::QueueGateLayer;
use queuegate::{Mode, Policy, RejectionCode};
use tower::{Layer, Service};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Writes every event's fields into one string.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<String>>);

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, "{}={:?} ", field.name(), value);
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut out = self.0.lock().unwrap();
        event.record(&mut Fields(&mut out));
        out.push('\n');
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn events_name_the_code_not_the_ticket() {
    let fx = Fixture::new();
    let capture = Capture::default();
    let policy = Policy::new(QUEUE).mode_for(RejectionCode::NotAdmitted, Mode::Monitor);
    let mut svc =
        QueueGateLayer::new(fx.verifier(policy)).layer(tower::service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(String::new()))
        }));
    let forged = tamper(&fx.admitted(SESSION));
    let waiting = fx.waiting(SESSION);
    tracing::subscriber::with_default(capture.clone(), || {
        for ticket in [&forged, &waiting] {
            let req = Request::get("/book")
                .header("queue-ticket", ticket.as_str())
                .header("cookie", cookie(SESSION))
                .body(())
                .unwrap();
            now_or_never(svc.call(req)).unwrap();
        }
    });
    let log = capture.0.lock().unwrap().clone();
    assert!(log.contains("code=\"bad_signature\""), "{log}");
    assert!(log.contains("code=\"not_admitted\""), "{log}");
    assert!(!log.contains(forged.as_str()) && !log.contains(waiting.as_str()));
    assert!(!log.contains(&forged[..40]) && !log.contains(&waiting[..40]));
    assert!(!log.contains(SESSION), "binding material is not logged");
}
