//! A dudect-style timing check (threat T3): does verifying a tag take
//! longer when the wrong tag's first difference from the right one comes
//! later? An early-exit comparison would tell a forger, byte by byte, how
//! much of a tag it had right.
//!
//! Two classes of wrong tags are timed, interleaved in random order: tags
//! that differ from the right one in their first byte, and tags that differ
//! only in their last byte. Welch's t-test compares the two timing
//! distributions (after cropping the slowest samples, as dudect does). With
//! |t| above 4.5 the distributions differ with overwhelming confidence: a
//! leak. The same measurement of a deliberately leaky early-exit
//! comparison shows that the method can see such a leak on this machine.
//!
//! Not part of `cargo test` (timing is noisy on shared machines). Run:
//!
//! ```sh
//! cargo bench --bench mac_timing            # 200 000 samples per target
//! SAMPLES=2000000 cargo bench --bench mac_timing
//! ```
//!
//! It prints one line per target and exits with status 1 if a constant-time
//! target shows |t| > 4.5.

use std::hint::black_box;
use std::time::Instant;

use queuegate::ticket::{decode, encode, Binding, Claims, QueueId, TicketId, TicketKind};
use queuegate::{KeyRing, MacKey};

/// Calls per timed sample (amortises the clock read).
const BATCH: usize = 8;
/// |t| above which the two classes' timings are called different.
const THRESHOLD: f64 = 4.5;

struct Stats {
    n: f64,
    mean: f64,
    m2: f64,
}

impl Stats {
    fn new() -> Self {
        Self {
            n: 0.0,
            mean: 0.0,
            m2: 0.0,
        }
    }
    fn push(&mut self, x: f64) {
        self.n += 1.0;
        let d = x - self.mean;
        self.mean += d / self.n;
        self.m2 += d * (x - self.mean);
    }
    fn var(&self) -> f64 {
        self.m2 / (self.n - 1.0)
    }
}

fn welch_t(a: &Stats, b: &Stats) -> f64 {
    (a.mean - b.mean) / (a.var() / a.n + b.var() / b.n).sqrt()
}

struct Rng(u64);
impl Rng {
    fn bit(&mut self) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 32) as usize & 1
    }
}

/// Times `run(input)` on inputs of random classes; returns Welch's t over
/// samples below each cropping percentile, the largest |t| (dudect's
/// rule). `prepare(class, &mut input)` writes the class's input into the
/// one buffer, outside the timed region, so that both classes are read
/// from the same addresses (otherwise cache placement alone can differ).
fn measure<I>(
    samples: usize,
    mut input: I,
    mut prepare: impl FnMut(usize, &mut I),
    mut run: impl FnMut(&I) -> bool,
) -> (f64, [f64; 2]) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut times: Vec<(usize, u64)> = Vec::with_capacity(samples);
    // Warm up.
    for i in 0..10_000 {
        prepare(i & 1, &mut input);
        black_box(run(&input));
    }
    for _ in 0..samples {
        let class = rng.bit();
        prepare(class, &mut input);
        let start = Instant::now();
        for _ in 0..BATCH {
            black_box(run(black_box(&input)));
        }
        times.push((class, start.elapsed().as_nanos() as u64));
    }
    let mut sorted: Vec<u64> = times.iter().map(|&(_, t)| t).collect();
    sorted.sort_unstable();
    let mut worst: f64 = 0.0;
    let mut means = [0.0; 2];
    for pct in [1.0, 0.99, 0.95, 0.9, 0.75, 0.5] {
        let cut = sorted[((sorted.len() - 1) as f64 * pct) as usize];
        let mut s = [Stats::new(), Stats::new()];
        for &(class, t) in &times {
            if t <= cut {
                s[class].push(t as f64 / BATCH as f64);
            }
        }
        let t = welch_t(&s[0], &s[1]);
        if t.abs() > worst.abs() {
            worst = t;
        }
        if pct == 0.9 {
            means = [s[0].mean, s[1].mean];
        }
    }
    (worst, means)
}

/// The comparison a naive implementation would write.
fn leaky_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    for i in 0..a.len() {
        if a[i] != b[i] {
            return false;
        }
    }
    true
}

fn main() {
    let samples: usize = std::env::var("SAMPLES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    // `cargo bench` passes `--bench`; nothing else is read.
    let key = MacKey::new(&[0x42; 32]);
    let msg = [0x17u8; 111];
    let right = key.tag(&[&msg]);
    let mut first = right;
    first[0] ^= 0x01;
    let mut last = right;
    last[31] ^= 0x01;
    let wrong = [first, last];

    // The full ticket path: KeyRing::verify on decoded tickets whose tag
    // differs first or last.
    let ring = KeyRing::new(1, &[0x42; 32]).unwrap();
    let claims = Claims {
        kind: TicketKind::Admitted,
        key_id: 1,
        queue: QueueId::from_name("timing"),
        ticket_id: TicketId([5; 16]),
        epoch: 1,
        sequence: 0,
        position: 1,
        joined_at_ms: 0,
        issued_at_ms: 0,
        live_until_ms: 1,
        admitted_from_ms: 0,
        expires_at_ms: 1,
        clock_offset_ms: None,
        binding: Binding([0; 16]),
    };
    let tickets = [
        decode(encode(&claims, &first).as_bytes()).unwrap(),
        decode(encode(&claims, &last).as_bytes()).unwrap(),
    ];

    println!("dudect-style check, {samples} samples per target, batch {BATCH}");
    println!("class 0: wrong tag differs in byte 0; class 1: only in byte 31");
    let mut leaked = false;
    let mut report = |name: &str, constant_time: bool, (t, means): (f64, [f64; 2])| {
        let verdict = if t.abs() > THRESHOLD {
            "DIFFERENT"
        } else {
            "no difference found"
        };
        println!(
            "{name:<30} t = {t:>8.2}  mean ns/call {:.1} vs {:.1}  {verdict}",
            means[0], means[1]
        );
        if constant_time && t.abs() > THRESHOLD {
            leaked = true;
        }
        if !constant_time && t.abs() <= THRESHOLD {
            println!("  (the control shows no leak: too few samples to see one here)");
        }
    };
    report(
        "MacKey::verify",
        true,
        measure(
            samples,
            right,
            |c, tag| *tag = wrong[c],
            |tag| key.verify(&msg, tag),
        ),
    );
    report(
        "KeyRing::verify (ticket)",
        true,
        measure(
            samples,
            tickets[0].clone(),
            |c, t| t.clone_from(&tickets[c]),
            |t| ring.verify(t).is_ok(),
        ),
    );
    report(
        "control: early-exit compare",
        false,
        measure(
            samples,
            right,
            |c, tag| *tag = wrong[c],
            |tag| leaky_eq(&right, tag),
        ),
    );
    if leaked {
        std::process::exit(1);
    }
}
