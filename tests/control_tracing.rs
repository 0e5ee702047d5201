//! With feature `tracing`, every change of the room's settings is an event
//! naming the setting with its old and new value.
#![cfg(feature = "tracing")]

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use queuegate::room::{MemoryRoomState, Setting};
use queuegate::{Issuer, KeyRing, ManualClock, MemoryReplayStore, Policy, WaitingRoom};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

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
fn every_change_is_an_event_with_old_and_new_value() {
    let clock = ManualClock::new(1_700_000_000_000);
    let keys = Arc::new(KeyRing::new(1, &[7u8; 32]).unwrap());
    let issuer = Issuer::new(
        keys,
        Policy::new("traced"),
        clock,
        Arc::new(MemoryReplayStore::new()),
    )
    .unwrap();
    let room = WaitingRoom::builder(issuer, MemoryRoomState::new())
        .admit_per_sec(5.0)
        .unwrap()
        .build()
        .unwrap();
    let capture = Capture::default();
    tracing::subscriber::with_default(capture.clone(), || {
        room.set_admit_per_sec(12.0).unwrap();
        room.pause();
        room.set_max_waiting(Some(100));
        room.close("Sold out").unwrap();
        // Refused changes are neither counted nor reported.
        assert!(room.set_admit_per_sec(f64::NAN).is_err());
        assert!(room.close("").is_err());
    });
    let out = capture.0.lock().unwrap().clone();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].contains("setting=\"admit_per_sec\"")
            && lines[0].contains("old=5")
            && lines[0].contains("new=12"),
        "{out}"
    );
    assert!(
        lines[1].contains("setting=\"paused\"")
            && lines[1].contains("old=false")
            && lines[1].contains("new=true"),
        "{out}"
    );
    assert!(
        lines[2].contains("old=none") && lines[2].contains("new=100"),
        "{out}"
    );
    assert!(
        lines[3].contains("old=open") && lines[3].contains("new=Sold out"),
        "{out}"
    );
    assert!(
        lines.iter().all(|l| l.contains("queue=\"traced\"")),
        "{out}"
    );
    assert_eq!(room.control_changes(Setting::AdmitPerSec), 1);
    assert_eq!(room.control_changes(Setting::Closed), 1);
}
