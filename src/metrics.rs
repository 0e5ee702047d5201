//! Live counters: requests let through, rejections per code, findings that
//! monitor mode let through, and a histogram of measured client-clock
//! offsets, readable at any time as a [`MetricsSnapshot`] or as Prometheus
//! text.
//!
//! One [`Metrics`] handle is cheap to clone (an `Arc`) and can be shared by
//! several layers and by the waiting room, so a host exposes one set:
//!
//! ```
//! use queuegate::{Metrics, RejectionCode};
//!
//! let metrics = Metrics::new();
//! metrics.record_rejection(RejectionCode::Missing);
//! metrics.observe_client_offset_ms(-1_200);
//! // One line for the operator's scrape endpoint:
//! let text = metrics.render_prometheus();
//! assert!(text.contains("queuegate_rejections_total{code=\"missing\"} 1"));
//! ```
//!
//! The hot path is a handful of relaxed atomic increments: no lock, no
//! allocation. When the middle of the offset histogram moves away from zero
//! for everyone at once, the *server's* clock is the suspect.
//!
//! With the `metrics` feature, every counter, gauge and offset is also
//! reported to the [`metrics`](https://docs.rs/metrics) facade, under the
//! same names and `code` labels. The handles are registered once, when the
//! [`Metrics`] is created, so the recorder must be installed before that
//! (the hot path then stays free of key building and allocation).

use std::fmt::{self, Write as _};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use crate::rejection::RejectionCode;
use crate::ticket::TicketId;

/// Upper bounds (inclusive, milliseconds, signed) of the client-clock offset
/// histogram's finite buckets; a last bucket catches everything above.
///
/// Offsets are client time minus server time: negative means the client's
/// clock is behind (or the request was delayed on the network).
pub const OFFSET_BUCKETS_MS: [i64; 12] = [
    -3_600_000, -300_000, -60_000, -30_000, -5_000, -1_000, 1_000, 5_000, 30_000, 60_000, 300_000,
    3_600_000,
];

const BUCKETS: usize = OFFSET_BUCKETS_MS.len() + 1;

#[derive(Default)]
struct Inner {
    #[cfg(feature = "metrics")]
    exported: Option<exported::Exported>,
    admissions: AtomicU64,
    rejections: [AtomicU64; RejectionCode::COUNT],
    monitored: [AtomicU64; RejectionCode::COUNT],
    room_admitted: AtomicU64,
    waiting: AtomicU64,
    store_entries: AtomicU64,
    offset_buckets: [AtomicU64; BUCKETS],
    offset_count: AtomicU64,
    offset_sum_ms: AtomicI64,
    /// Chains observed lately, by a slot picked from the ticket id (see
    /// [`Metrics::observe_chain_offset_ms`]).
    observed_chains: Box<[AtomicU64]>,
}

/// Slots in the table of recently observed chains (8 KiB).
const OBSERVED_CHAINS: usize = 1024;

/// A shared handle on queuegate's counters. Clones share the same counters.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Metrics").field(&self.snapshot()).finish()
    }
}

impl Metrics {
    /// A fresh set of counters, all zero (with the `metrics` feature, also
    /// registered with the `metrics` recorder installed now).
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                #[cfg(feature = "metrics")]
                exported: Some(exported::Exported::register()),
                observed_chains: (0..OBSERVED_CHAINS).map(|_| AtomicU64::new(0)).collect(),
                ..Inner::default()
            }),
        }
    }

    /// Counts a request let through to the protected service: every
    /// enforced check passed (monitored findings included).
    pub fn record_admission(&self) {
        self.inner.admissions.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(e) = &self.inner.exported {
            e.admissions.increment(1);
        }
    }

    /// Counts an enforced rejection.
    pub fn record_rejection(&self, code: RejectionCode) {
        self.inner.rejections[code.index()].fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(e) = &self.inner.exported {
            e.rejections[code.index()].increment(1);
        }
    }

    /// Counts a finding that monitor mode let through ("would reject").
    pub fn record_monitored(&self, code: RejectionCode) {
        self.inner.monitored[code.index()].fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(e) = &self.inner.exported {
            e.monitored[code.index()].increment(1);
        }
    }

    /// Adds a measured client-clock offset (client minus server time, ms)
    /// to the histogram.
    pub fn observe_client_offset_ms(&self, offset_ms: i64) {
        let bucket = OFFSET_BUCKETS_MS
            .iter()
            .position(|&le| offset_ms <= le)
            .unwrap_or(BUCKETS - 1);
        let inner = &self.inner;
        inner.offset_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        inner.offset_count.fetch_add(1, Ordering::Relaxed);
        // Saturating: one absurd offset must not wrap the sum.
        let _ = inner
            .offset_sum_ms
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some(s.saturating_add(offset_ms))
            });
        #[cfg(feature = "metrics")]
        if let Some(e) = &self.inner.exported {
            e.offset.record(offset_ms as f64);
        }
    }

    /// Adds the client-clock offset of a request that chain `chain` passed
    /// with, unless this chain was observed lately: one observation per
    /// chain, not one per request, so a client that sends many requests
    /// weighs no more than one that sends few. Returns whether it was
    /// added.
    ///
    /// "Lately" is a table of 1024 slots, one per chain by its (random,
    /// server-minted) ticket id: another chain landing on the same slot
    /// lets this one be observed again, so under load a chain is observed
    /// about once per 1024 other chains, whatever it sends. No lock, no
    /// allocation.
    pub fn observe_chain_offset_ms(&self, chain: TicketId, offset_ms: i64) -> bool {
        let slots = &self.inner.observed_chains;
        if !slots.is_empty() {
            let (lo, hi) = chain.0.split_at(8);
            let tag = u64::from_le_bytes(lo.try_into().expect("8 bytes")).max(1);
            let slot = u64::from_le_bytes(hi.try_into().expect("8 bytes")) as usize % slots.len();
            if slots[slot].swap(tag, Ordering::Relaxed) == tag {
                return false;
            }
        }
        self.observe_client_offset_ms(offset_ms);
        true
    }

    /// Counts a client admitted by the waiting room (issuer side).
    pub fn record_room_admitted(&self) {
        self.inner.room_admitted.fetch_add(1, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(e) = &self.inner.exported {
            e.room_admitted.increment(1);
        }
    }

    /// Sets the gauge of clients waiting in the room.
    pub fn set_waiting(&self, waiting: u64) {
        self.inner.waiting.store(waiting, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(e) = &self.inner.exported {
            e.waiting.set(waiting as f64);
        }
    }

    /// Sets the gauge of records held by the replay/state store.
    pub fn set_store_entries(&self, entries: u64) {
        self.inner.store_entries.store(entries, Ordering::Relaxed);
        #[cfg(feature = "metrics")]
        if let Some(e) = &self.inner.exported {
            e.store_entries.set(entries as f64);
        }
    }

    /// Reads every counter. Counters are read one by one, so a snapshot
    /// taken under load is not an atomic cut (each value is exact).
    pub fn snapshot(&self) -> MetricsSnapshot {
        let i = &self.inner;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        MetricsSnapshot {
            admissions: load(&i.admissions),
            rejections: std::array::from_fn(|k| load(&i.rejections[k])),
            monitored: std::array::from_fn(|k| load(&i.monitored[k])),
            room_admitted: load(&i.room_admitted),
            waiting: load(&i.waiting),
            store_entries: load(&i.store_entries),
            offset_buckets: std::array::from_fn(|k| load(&i.offset_buckets[k])),
            offset_count: load(&i.offset_count),
            offset_sum_ms: i.offset_sum_ms.load(Ordering::Relaxed),
        }
    }

    /// The counters in the Prometheus text exposition format (version
    /// 0.0.4). Every rejection code is listed, zeros included, so a
    /// dashboard sees a series before its first event.
    pub fn render_prometheus(&self) -> String {
        self.snapshot().render_prometheus()
    }
}

/// The counters at one moment, from [`Metrics::snapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Requests let through to the protected service.
    pub admissions: u64,
    /// Enforced rejections, indexed by [`RejectionCode::index`].
    pub rejections: [u64; RejectionCode::COUNT],
    /// Findings let through by monitor mode, indexed by
    /// [`RejectionCode::index`].
    pub monitored: [u64; RejectionCode::COUNT],
    /// Clients admitted by the waiting room.
    pub room_admitted: u64,
    /// Clients waiting in the room (gauge).
    pub waiting: u64,
    /// Records in the state store (gauge).
    pub store_entries: u64,
    /// Offsets per bucket (not cumulative); bucket `k < 12` holds offsets
    /// at most [`OFFSET_BUCKETS_MS`]`[k]` and above the bucket before it,
    /// the last one everything above the last bound.
    pub offset_buckets: [u64; OFFSET_BUCKETS_MS.len() + 1],
    /// How many offsets were measured.
    pub offset_count: u64,
    /// Their sum in ms (saturating).
    pub offset_sum_ms: i64,
}

impl MetricsSnapshot {
    /// Enforced rejections with `code`.
    pub fn rejections(&self, code: RejectionCode) -> u64 {
        self.rejections[code.index()]
    }

    /// Monitored findings with `code`.
    pub fn monitored(&self, code: RejectionCode) -> u64 {
        self.monitored[code.index()]
    }

    /// Every enforced rejection.
    pub fn rejections_total(&self) -> u64 {
        self.rejections.iter().sum()
    }

    /// Every monitored finding.
    pub fn monitored_total(&self) -> u64 {
        self.monitored.iter().sum()
    }

    /// The Prometheus text of this snapshot (see
    /// [`Metrics::render_prometheus`]).
    pub fn render_prometheus(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = self.write_prometheus(&mut out);
        out
    }

    fn write_prometheus(&self, out: &mut String) -> fmt::Result {
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} counter")?;
            writeln!(out, "{name} {value}")
        };
        let gauge = |out: &mut String, name: &str, help: &str, value: u64| {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} gauge")?;
            writeln!(out, "{name} {value}")
        };
        counter(
            out,
            "queuegate_admissions_total",
            "Requests let through to the protected service (monitored ones included).",
            self.admissions,
        )?;
        let per_code = |out: &mut String, name: &str, help: &str, values: &[u64]| {
            writeln!(out, "# HELP {name} {help}")?;
            writeln!(out, "# TYPE {name} counter")?;
            for code in RejectionCode::ALL {
                writeln!(
                    out,
                    "{name}{{code=\"{}\"}} {}",
                    code.as_str(),
                    values[code.index()]
                )?;
            }
            Ok::<(), fmt::Error>(())
        };
        per_code(
            out,
            "queuegate_rejections_total",
            "Requests refused, by rejection code.",
            &self.rejections,
        )?;
        per_code(
            out,
            "queuegate_monitored_total",
            "Requests monitor mode let through that enforce mode would refuse, by code.",
            &self.monitored,
        )?;
        counter(
            out,
            "queuegate_room_admitted_total",
            "Clients admitted by the waiting room.",
            self.room_admitted,
        )?;
        gauge(
            out,
            "queuegate_waiting",
            "Clients waiting in the room.",
            self.waiting,
        )?;
        gauge(
            out,
            "queuegate_store_entries",
            "Records held by the state store.",
            self.store_entries,
        )?;
        let name = "queuegate_client_clock_offset_ms";
        writeln!(
            out,
            "# HELP {name} Client clock minus server clock, measured on arrival (ms)."
        )?;
        writeln!(out, "# TYPE {name} histogram")?;
        let mut cumulative = 0u64;
        for (k, le) in OFFSET_BUCKETS_MS.iter().enumerate() {
            cumulative += self.offset_buckets[k];
            writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}")?;
        }
        cumulative += self.offset_buckets[BUCKETS - 1];
        writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}")?;
        writeln!(out, "{name}_sum {}", self.offset_sum_ms)?;
        writeln!(out, "{name}_count {}", self.offset_count)
    }
}

#[cfg(feature = "metrics")]
mod exported {
    //! Handles on the `metrics` facade, registered once.

    use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};

    use crate::rejection::RejectionCode;

    pub(super) struct Exported {
        pub(super) admissions: Counter,
        pub(super) rejections: [Counter; RejectionCode::COUNT],
        pub(super) monitored: [Counter; RejectionCode::COUNT],
        pub(super) room_admitted: Counter,
        pub(super) waiting: Gauge,
        pub(super) store_entries: Gauge,
        pub(super) offset: Histogram,
    }

    impl Exported {
        pub(super) fn register() -> Self {
            Self {
                admissions: counter!("queuegate_admissions_total"),
                rejections: std::array::from_fn(|k| {
                    let code = RejectionCode::ALL[k].as_str();
                    counter!("queuegate_rejections_total", "code" => code)
                }),
                monitored: std::array::from_fn(|k| {
                    let code = RejectionCode::ALL[k].as_str();
                    counter!("queuegate_monitored_total", "code" => code)
                }),
                room_admitted: counter!("queuegate_room_admitted_total"),
                waiting: gauge!("queuegate_waiting"),
                store_entries: gauge!("queuegate_store_entries"),
                offset: histogram!("queuegate_client_clock_offset_ms"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_counters() {
        let a = Metrics::new();
        let b = a.clone();
        a.record_admission();
        b.record_admission();
        b.record_rejection(RejectionCode::Replayed);
        a.record_monitored(RejectionCode::ClockSkew);
        a.record_room_admitted();
        b.set_waiting(42);
        b.set_store_entries(7);
        let s = a.snapshot();
        assert_eq!(s.admissions, 2);
        assert_eq!(s.rejections(RejectionCode::Replayed), 1);
        assert_eq!(s.rejections(RejectionCode::Missing), 0);
        assert_eq!(s.monitored(RejectionCode::ClockSkew), 1);
        assert_eq!(s.rejections_total(), 1);
        assert_eq!(s.monitored_total(), 1);
        assert_eq!((s.room_admitted, s.waiting, s.store_entries), (1, 42, 7));
    }

    #[test]
    fn a_chain_is_observed_once_however_often_it_passes() {
        let m = Metrics::new();
        let a = TicketId([1; 16]);
        let b = TicketId([2; 16]);
        assert!(m.observe_chain_offset_ms(a, 240_000));
        for _ in 0..100 {
            assert!(!m.observe_chain_offset_ms(a, 240_000));
        }
        assert!(m.observe_chain_offset_ms(b, -10));
        let s = m.snapshot();
        assert_eq!((s.offset_count, s.offset_sum_ms), (2, 239_990));
    }

    #[test]
    fn offsets_land_in_signed_buckets() {
        let m = Metrics::new();
        for offset in [
            -4_000_000,
            -1_000,
            -999,
            0,
            1_000,
            1_001,
            7_200_000,
            i64::MAX,
        ] {
            m.observe_client_offset_ms(offset);
        }
        let s = m.snapshot();
        assert_eq!(s.offset_buckets[0], 1, "below -1h");
        assert_eq!(s.offset_buckets[5], 1, "-1000 is in the (-5s, -1s] bucket");
        assert_eq!(s.offset_buckets[6], 3, "-999, 0 and 1000 are within ±1s");
        assert_eq!(s.offset_buckets[7], 1, "1001 is in (1s, 5s]");
        assert_eq!(s.offset_buckets[12], 2, "above 1h");
        assert_eq!(s.offset_count, 8);
        assert_eq!(s.offset_sum_ms, i64::MAX, "the sum saturates");
    }

    #[test]
    fn prometheus_text_lists_every_code_and_cumulative_buckets() {
        let m = Metrics::new();
        m.record_rejection(RejectionCode::NotAdmitted);
        m.record_rejection(RejectionCode::NotAdmitted);
        m.record_monitored(RejectionCode::ClockJump);
        m.observe_client_offset_ms(-2_000);
        m.observe_client_offset_ms(500);
        m.set_waiting(3);
        let text = m.render_prometheus();
        for code in RejectionCode::ALL {
            let line = format!("queuegate_rejections_total{{code=\"{}\"}} ", code.as_str());
            assert!(text.contains(&line), "{line} missing");
            let line = format!("queuegate_monitored_total{{code=\"{}\"}} ", code.as_str());
            assert!(text.contains(&line), "{line} missing");
        }
        assert!(text.contains("queuegate_rejections_total{code=\"not_admitted\"} 2\n"));
        assert!(text.contains("queuegate_rejections_total{code=\"missing\"} 0\n"));
        assert!(text.contains("queuegate_monitored_total{code=\"clock_jump\"} 1\n"));
        assert!(text.contains("queuegate_admissions_total 0\n"));
        assert!(text.contains("queuegate_waiting 3\n"));
        assert!(text.contains("queuegate_store_entries 0\n"));
        assert!(text.contains("queuegate_room_admitted_total 0\n"));
        assert!(text.contains("queuegate_client_clock_offset_ms_bucket{le=\"-5000\"} 0\n"));
        assert!(text.contains("queuegate_client_clock_offset_ms_bucket{le=\"-1000\"} 1\n"));
        assert!(text.contains("queuegate_client_clock_offset_ms_bucket{le=\"1000\"} 2\n"));
        assert!(text.contains("queuegate_client_clock_offset_ms_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("queuegate_client_clock_offset_ms_sum -1500\n"));
        assert!(text.contains("queuegate_client_clock_offset_ms_count 2\n"));
        assert!(text.contains("# TYPE queuegate_client_clock_offset_ms histogram\n"));
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn the_metrics_facade_gets_the_same_counts() {
        use std::collections::HashMap;
        use std::sync::atomic::AtomicU64;
        use std::sync::Mutex;

        use ::metrics::{
            Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit,
        };

        #[derive(Default)]
        struct Recorded(Mutex<HashMap<String, Arc<AtomicU64>>>);

        impl Recorded {
            fn cell(&self, key: &Key) -> Arc<AtomicU64> {
                let labels: Vec<_> = key
                    .labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect();
                let name = format!("{}{:?}", key.name(), labels);
                self.0.lock().unwrap().entry(name).or_default().clone()
            }
            fn get(&self, name: &str) -> u64 {
                self.0.lock().unwrap()[name].load(Ordering::Relaxed)
            }
        }

        impl Recorder for Recorded {
            fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
            fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
                Counter::from_arc(self.cell(key))
            }
            fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
                Gauge::from_arc(self.cell(key))
            }
            fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
                Histogram::noop()
            }
        }

        let recorder = Recorded::default();
        let m = ::metrics::with_local_recorder(&recorder, Metrics::new);
        m.record_rejection(RejectionCode::Replayed);
        m.record_rejection(RejectionCode::Replayed);
        m.record_monitored(RejectionCode::ClockSkew);
        m.record_admission();
        m.set_store_entries(9);
        assert_eq!(
            recorder.get("queuegate_rejections_total[\"code=replayed\"]"),
            2
        );
        assert_eq!(
            recorder.get("queuegate_rejections_total[\"code=missing\"]"),
            0
        );
        assert_eq!(
            recorder.get("queuegate_monitored_total[\"code=clock_skew\"]"),
            1
        );
        assert_eq!(recorder.get("queuegate_admissions_total[]"), 1);
        assert_eq!(
            f64::from_bits(recorder.get("queuegate_store_entries[]")),
            9.0
        );
    }
}
