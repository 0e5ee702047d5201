//! Health for operators: a server-clock check that never turns one wrong
//! clock into an outage ([`ClockCheck`]), and the `/healthz` and `/readyz`
//! answers a host mounts ([`Health`]).
//!
//! Readiness reflects **local faults only**: this instance's clock is the
//! outlier, or its start failed. A state store outage is never
//! unreadiness: every instance shares the store, so a balancer that drops
//! unready instances would turn the designed `store_unavailable` answer
//! into no answer at all. A store outage is a metric and an alert
//! (`deploy/prometheus/queuegate.rules.yml`).

mod clock;
mod ready;

#[cfg(feature = "redis")]
pub use clock::RedisTime;
pub use clock::{ClockCheck, ClockReport, ClockVerdict, RedisReading};
pub use ready::{Health, Readiness};
