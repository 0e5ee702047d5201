//! Time faults with the injected clock (threats T5, T6, T7, T8): a server
//! clock stepped back never un-expires a ticket nor re-admits a consumed
//! one; instants at 0, negative and at the ends of `i64`; calendar
//! boundaries (midnight, month end, year end, leap day); client clocks that
//! are garbage, negative, huge or in seconds — each a clear rejection or a
//! clean ignore as the policy says, never a panic.

mod adversary;

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use queuegate::ticket::{Claims, QueueId, TicketId, TicketKind};
use queuegate::{
    ClientTime, ClientTimeRule, Issuer, MalformedReason, ManualClock, MemoryReplayStore, Mode,
    Policy, Presented, Rejection, RejectionCode, ReplayMode, Verifier,
};

use adversary::*;

fn fixture(policy: Policy, at_ms: i64) -> Fixture<MemoryReplayStore> {
    Fixture::new(
        Arc::new(MemoryReplayStore::new()),
        policy,
        ManualClock::new(at_ms),
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

fn code(r: Result<queuegate::Verified, Rejection>) -> Result<(), RejectionCode> {
    r.map(|_| ()).map_err(|e| e.code())
}

#[test]
fn a_step_back_never_unexpires_a_ticket() {
    rt().block_on(async {
        let f = fixture(Policy::new(QUEUE), NOW_MS);
        // Live for an hour, but the admitted chain expires after 10 minutes.
        let t = f.join(b"me", &admit_now(Duration::from_secs(3_600)));
        assert_eq!(
            code(f.verifier.verify(&presented(&t.ticket, b"me")).await),
            Ok(())
        );
        f.clock.advance(Duration::from_secs(600));
        // The waiting room serves other heartbeats meanwhile: its clock has
        // seen this time too (each Verifier and Issuer keeps its own
        // high-water mark; see `one_monotone_clock_for_issuer_and_verifier`).
        assert_eq!(f.issuer.now_ms(), NOW_MS + 600_000);
        let expired = Err(RejectionCode::Expired);
        assert_eq!(
            code(f.verifier.verify(&presented(&t.ticket, b"me")).await),
            expired
        );
        // An NTP step back by an hour, then to the epoch, then to i64::MIN.
        for back in [NOW_MS - 3_600_000, 0, i64::MIN] {
            f.clock.set_ms(back);
            assert_eq!(
                code(f.verifier.verify(&presented(&t.ticket, b"me")).await),
                expired,
                "clock stepped back to {back}"
            );
            assert_eq!(
                f.renew(&t.ticket, b"me", &admit_now(Duration::from_secs(60)))
                    .await
                    .unwrap_err()
                    .code(),
                RejectionCode::Expired
            );
        }
    });
}

#[test]
fn a_step_back_never_revives_an_offline_chain() {
    rt().block_on(async {
        let f = fixture(Policy::new(QUEUE), NOW_MS);
        let t = f.join(b"me", &admit_now(Duration::from_secs(30)));
        f.clock.advance(Duration::from_secs(30));
        assert_eq!(f.issuer.now_ms(), NOW_MS + 30_000);
        let offline = Err(RejectionCode::OfflineResumed);
        assert_eq!(
            code(f.verifier.verify(&presented(&t.ticket, b"me")).await),
            offline
        );
        f.clock.rewind(Duration::from_secs(25));
        assert_eq!(
            code(f.verifier.verify(&presented(&t.ticket, b"me")).await),
            offline
        );
        // The heartbeat refuses it too: the client must rejoin.
        let renewed = f
            .renew(&t.ticket, b"me", &admit_now(Duration::from_secs(30)))
            .await;
        assert_eq!(renewed.unwrap_err().code(), RejectionCode::OfflineResumed);
    });
}

/// A single-use booking whose handler succeeds: verified, then committed
/// as the layer does on a 2xx.
async fn book<S: queuegate::ReplayStore>(f: &Fixture<S>, ticket: &str) {
    let v = f
        .verifier
        .verify(&presented(ticket, b"me"))
        .await
        .expect("the first use books");
    f.verifier
        .settle(&v, queuegate::Settlement::Commit)
        .expect("a hold")
        .await
        .expect("committed");
}

#[test]
fn a_step_back_never_readmits_a_consumed_ticket() {
    rt().block_on(async {
        let policy = Policy::new(QUEUE)
            .scope("reserve")
            .replay(ReplayMode::SingleUse);
        let f = fixture(policy, NOW_MS);
        let t = f.admitted(b"me");
        book(&f, &t.ticket).await;
        for step in [1_000, 60_000, 3_600_000, 86_400_000] {
            f.clock.set_ms(NOW_MS - step);
            assert_eq!(
                code(f.verifier.verify(&presented(&t.ticket, b"me")).await),
                Err(RejectionCode::Replayed),
                "after a step back of {step} ms"
            );
        }
    });
}

/// Each Verifier and Issuer makes its clock monotone on its own. Built on
/// one shared `MonotonicClock`, they share one high-water mark: a heartbeat
/// then cannot renew a chain the gate saw expire, even if the room itself
/// read no clock between the expiry and the step back.
#[test]
fn one_monotone_clock_for_issuer_and_verifier() {
    rt().block_on(async {
        let manual = ManualClock::new(NOW_MS);
        let shared = queuegate::MonotonicClock::new(manual.clone());
        let store = Arc::new(MemoryReplayStore::new());
        let issuer =
            Issuer::new(keys(), Policy::new(QUEUE), shared.clone(), store.clone()).unwrap();
        let verifier = Verifier::new(keys(), Policy::new(QUEUE), shared, store).unwrap();
        let t = issuer
            .join(
                b"me",
                ClientTime::Absent,
                &admit_now(Duration::from_secs(3_600)),
            )
            .unwrap();
        manual.advance(Duration::from_secs(600));
        assert_eq!(
            code(verifier.verify(&presented(&t.ticket, b"me")).await),
            Err(RejectionCode::Expired)
        );
        manual.set_ms(NOW_MS);
        let current = issuer.check(&presented(&t.ticket, b"me"));
        assert_eq!(current.unwrap_err().code(), RejectionCode::Expired);
    });
}

/// Regression: a record dropped at a later time (a purge, or another
/// verifier's expiry sweep, driven by a clock that was ahead) must not let
/// a verifier whose clock is behind admit the consumed ticket again.
#[test]
fn a_record_dropped_by_a_clock_ahead_never_readmits_a_consumed_ticket() {
    rt().block_on(async {
        let policy = Policy::new(QUEUE)
            .scope("reserve")
            .replay(ReplayMode::SingleUse);
        let f = fixture(policy.clone(), NOW_MS);
        let t = f.admitted(b"me");
        assert_eq!(
            code(f.verifier.verify(&presented(&t.ticket, b"me")).await),
            Ok(())
        );
        // The host's purge task reads a system clock stepped a day ahead.
        f.store.purge(NOW_MS + 86_400_000);
        // The verifier never saw that time; its clock reads 1 s later.
        f.clock.set_ms(NOW_MS + 1_000);
        assert_eq!(
            code(f.verifier.verify(&presented(&t.ticket, b"me")).await),
            Err(RejectionCode::Replayed),
            "a consumed ticket was admitted twice after a purge ahead of time"
        );

        // The same through another verifier on the same store that served a
        // request while the clock was a day ahead (its lookups drain expired
        // records), then the clock was stepped back.
        let f = fixture(policy.clone(), NOW_MS);
        let t = f.admitted(b"me");
        assert_eq!(
            code(f.verifier.verify(&presented(&t.ticket, b"me")).await),
            Ok(())
        );
        let ahead = ManualClock::new(NOW_MS + 86_400_000);
        let other_issuer =
            Issuer::new(keys(), policy.clone(), ahead.clone(), f.store.clone()).unwrap();
        let other = Verifier::new(keys(), policy, ahead, f.store.clone()).unwrap();
        for i in 0..200 {
            let b = format!("someone-{i}");
            let m = other_issuer
                .join(
                    b.as_bytes(),
                    ClientTime::Absent,
                    &admit_now(Duration::from_secs(60)),
                )
                .unwrap();
            let _ = other.verify(&presented(&m.ticket, b.as_bytes())).await;
        }
        f.clock.set_ms(NOW_MS + 1_000);
        assert_eq!(
            code(f.verifier.verify(&presented(&t.ticket, b"me")).await),
            Err(RejectionCode::Replayed),
            "a consumed ticket was admitted twice after a sweep ahead of time"
        );
    });
}

#[test]
fn a_purge_at_the_right_time_keeps_live_records() {
    rt().block_on(async {
        let policy = Policy::new(QUEUE)
            .scope("reserve")
            .replay(ReplayMode::SingleUse);
        let f = fixture(policy, NOW_MS);
        let t = f.admitted(b"me");
        book(&f, &t.ticket).await;
        f.clock.advance(Duration::from_secs(5));
        f.store.purge(NOW_MS + 5_000);
        assert_eq!(
            code(f.verifier.verify(&presented(&t.ticket, b"me")).await),
            Err(RejectionCode::Replayed)
        );
        // A fresh ticket is unaffected by the purge.
        let u = f.admitted(b"you");
        assert_eq!(
            code(f.verifier.verify(&presented(&u.ticket, b"you")).await),
            Ok(())
        );
    });
}

/// Instants at calendar boundaries: a ticket is good 1 ms before its
/// expiry and expired at it, whatever the date.
#[test]
fn expiry_at_calendar_boundaries() {
    let boundaries = [
        (
            "midnight",
            Utc.with_ymd_and_hms(2026, 11, 26, 0, 0, 0).unwrap(),
        ),
        (
            "month end",
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
        ),
        (
            "year end",
            Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap(),
        ),
        (
            "into the leap day",
            Utc.with_ymd_and_hms(2028, 2, 29, 0, 0, 0).unwrap(),
        ),
        (
            "out of the leap day",
            Utc.with_ymd_and_hms(2028, 3, 1, 0, 0, 0).unwrap(),
        ),
        ("epoch", Utc.with_ymd_and_hms(1970, 1, 1, 0, 0, 0).unwrap()),
        (
            "before the epoch",
            Utc.with_ymd_and_hms(1969, 12, 31, 0, 0, 0).unwrap(),
        ),
        (
            "y2038",
            Utc.with_ymd_and_hms(2038, 1, 19, 3, 14, 8).unwrap(),
        ),
    ];
    rt().block_on(async {
        for (what, boundary) in boundaries {
            let ttl = Duration::from_secs(600);
            let join_at = boundary - chrono::Duration::from_std(ttl).unwrap();
            let f = fixture(Policy::new(QUEUE), join_at.timestamp_millis());
            let keys = keys();
            let issuer = Issuer::new(keys, Policy::new(QUEUE), f.clock.clone(), f.store.clone())
                .unwrap()
                .admitted_ttl(ttl);
            let t = issuer
                .join(
                    b"me",
                    ClientTime::Absent,
                    &admit_now(Duration::from_secs(3_600)),
                )
                .unwrap();
            assert_eq!(t.claims.expires_at(), boundary, "{what}");
            f.clock.set(boundary - chrono::Duration::milliseconds(1));
            assert_eq!(
                code(f.verifier.verify(&presented(&t.ticket, b"me")).await),
                Ok(()),
                "{what}: 1 ms before"
            );
            f.clock.set(boundary);
            let r = f.verifier.verify(&presented(&t.ticket, b"me")).await;
            assert_eq!(
                r,
                Err(Rejection::Expired { expired_for_ms: 0 }),
                "{what}: at the boundary"
            );
        }
    });
}

#[test]
fn liveness_deadline_across_midnight_and_the_leap_day() {
    rt().block_on(async {
        for deadline in [
            Utc.with_ymd_and_hms(2028, 2, 29, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2028, 3, 1, 0, 0, 0).unwrap(),
        ] {
            let f = fixture(
                Policy::new(QUEUE),
                (deadline - chrono::Duration::seconds(30)).timestamp_millis(),
            );
            let t = f.join(b"me", &admit_now(Duration::from_secs(30)));
            assert_eq!(t.claims.live_until(), deadline);
            f.clock.set(deadline - chrono::Duration::milliseconds(1));
            assert_eq!(
                code(f.verifier.verify(&presented(&t.ticket, b"me")).await),
                Ok(())
            );
            f.clock.set(deadline);
            assert_eq!(
                code(f.verifier.verify(&presented(&t.ticket, b"me")).await),
                Err(RejectionCode::OfflineResumed)
            );
        }
    });
}

/// The server clock at the ends of its range: joins and checks run, and
/// every answer is a clean one.
#[test]
fn server_time_at_zero_negative_and_the_ends_of_i64() {
    rt().block_on(async {
        for now in [
            0,
            -1,
            -86_400_000,
            i64::MIN,
            i64::MIN + 1,
            i64::MAX - 1,
            i64::MAX,
        ] {
            let f = fixture(Policy::new(QUEUE), now);
            let t = f.join(b"me", &admit_now(Duration::from_secs(60)));
            let r = code(f.verifier.verify(&presented(&t.ticket, b"me")).await);
            if now == i64::MAX {
                // Saturated instants: expiry and deadline equal now.
                assert!(
                    matches!(
                        r,
                        Err(RejectionCode::Expired | RejectionCode::OfflineResumed)
                    ),
                    "{now}: {r:?}"
                );
            } else {
                assert_eq!(r, Ok(()), "{now}");
            }
            // Client clocks at the ends of what the parser reads.
            for ct in [
                ClientTime::Millis(0),
                ClientTime::Millis(-9_999_999_999_999_999),
                ClientTime::Millis(9_999_999_999_999_999),
                ClientTime::Millis(i64::MAX),
                ClientTime::Millis(i64::MIN),
            ] {
                let p = Presented {
                    client_time: ct,
                    ..presented(&t.ticket, b"me")
                };
                let _ = f.verifier.verify(&p).await.map_err(|e| e.to_string());
                let _ = f.issuer.join(b"x", ct, &admit_now(Duration::from_secs(1)));
            }
        }
    });
}

/// Claims signed with instants at 0, negative and `i64::MAX`: each gives
/// the answer its fields say, never a panic or a wrapped comparison.
#[test]
fn signed_claims_with_extreme_instants() {
    let queue = QueueId::from_name(QUEUE);
    let base = Claims {
        kind: TicketKind::Admitted,
        key_id: KEY_ID,
        queue,
        ticket_id: TicketId([1; 16]),
        epoch: 0,
        sequence: 0,
        position: 1,
        joined_at_ms: 0,
        issued_at_ms: 0,
        live_until_ms: i64::MAX,
        admitted_from_ms: i64::MIN,
        expires_at_ms: i64::MAX,
        clock_offset_ms: None,
        binding: keys().bind(KEY_ID, queue, b"me").unwrap(),
    };
    let v = Verifier::new(
        keys(),
        Policy::new(QUEUE).replay(ReplayMode::Off),
        ManualClock::new(NOW_MS),
        Arc::new(MemoryReplayStore::new()),
    )
    .unwrap();
    let check = |c: Claims| {
        let text = sign(&c);
        v.check(&presented(&text, b"me")).map(|_| ())
    };
    assert_eq!(check(base), Ok(()));
    assert_eq!(
        check(Claims {
            expires_at_ms: 0,
            ..base
        }),
        Err(Rejection::Expired {
            expired_for_ms: NOW_MS as u64
        })
    );
    assert_eq!(
        check(Claims {
            expires_at_ms: i64::MIN,
            ..base
        }),
        Err(Rejection::Expired {
            expired_for_ms: (NOW_MS as i128 - i64::MIN as i128).min(i64::MAX as i128) as u64
        })
    );
    assert_eq!(
        check(Claims {
            live_until_ms: -1,
            ..base
        })
        .unwrap_err()
        .code(),
        RejectionCode::OfflineResumed
    );
    assert_eq!(
        check(Claims {
            admitted_from_ms: i64::MAX,
            ..base
        }),
        Err(Rejection::NotAdmitted {
            retry_after_ms: (i64::MAX - NOW_MS) as u64
        })
    );
    // A chain baseline at the ends of i32 against client clocks at the ends
    // of what is parsed.
    for baseline in [i32::MIN, -1, 0, i32::MAX] {
        let text = sign(&Claims {
            clock_offset_ms: Some(baseline),
            ..base
        });
        for t in [i64::MIN, -1, 0, NOW_MS, i64::MAX] {
            let p = Presented {
                client_time: ClientTime::Millis(t),
                ..presented(&text, b"me")
            };
            if let Err(e) = v.check(&p) {
                assert!(
                    matches!(
                        e.code(),
                        RejectionCode::ClockSkew | RejectionCode::ClockJump
                    ),
                    "{e:?}"
                );
                let _ = e.to_string();
            }
        }
    }
}

fn client_clock(
    f: &Fixture<MemoryReplayStore>,
    ticket: &str,
    header: &[u8],
) -> Result<(), Rejection> {
    let p = Presented {
        client_time: ClientTime::parse(header),
        ..presented(ticket, b"me")
    };
    f.verifier.check(&p).map(|_| ())
}

#[test]
fn client_clock_values_are_refused_or_ignored_as_policy_says() {
    let f = fixture(Policy::new(QUEUE), NOW_MS);
    let t = f.admitted(b"me");
    let now = NOW_MS.to_string();
    // Garbage of every shape: malformed (the header is not epoch ms).
    for garbage in [
        &b""[..],
        b"-",
        b"--1",
        b"+1795608000000",
        b"1795608000000.5",
        b"1.795608e12",
        b" 1795608000000",
        b"1795608000000 ",
        b"0x1a2b",
        b"NaN",
        b"Infinity",
        b"\xff\xfe",
        b"12345678901234567",
        b"99999999999999999999999",
        b"2026-11-25T12:00:00Z",
        b"Wed, 25 Nov 2026 12:00:00 GMT",
    ] {
        assert_eq!(
            client_clock(&f, &t.ticket, garbage),
            Err(Rejection::Malformed {
                reason: MalformedReason::ClientTime
            }),
            "{:?}",
            String::from_utf8_lossy(garbage)
        );
    }
    // Negative, zero, seconds instead of ms, far future: clock_skew, with a
    // message that says how far off the device is.
    for (value, words) in [
        (&b"-1"[..], "days"),
        (b"0", "days"),
        (b"1795608000", "days"), // seconds, not ms
        (b"9999999999999999", "days"),
        (b"-9999999999999999", "days"),
    ] {
        let r = client_clock(&f, &t.ticket, value).unwrap_err();
        assert_eq!(r.code(), RejectionCode::ClockSkew, "{value:?}");
        assert!(r.to_string().contains(words), "{r}");
    }
    // The exact tolerances pass; one more millisecond does not (5 min
    // forward; 5 min + 10 s of network delay backward).
    let at = |offset: i64| (NOW_MS + offset).to_string();
    assert_eq!(client_clock(&f, &t.ticket, now.as_bytes()), Ok(()));
    assert_eq!(client_clock(&f, &t.ticket, at(300_000).as_bytes()), Ok(()));
    assert_eq!(client_clock(&f, &t.ticket, at(-310_000).as_bytes()), Ok(()));
    assert_eq!(
        client_clock(&f, &t.ticket, at(300_001).as_bytes()),
        Err(Rejection::ClockSkew {
            offset_ms: 300_001,
            tolerance_ms: 300_000
        })
    );
    assert_eq!(
        client_clock(&f, &t.ticket, at(-310_001).as_bytes()),
        Err(Rejection::ClockSkew {
            offset_ms: -310_001,
            tolerance_ms: 310_000
        })
    );
    // Absent: ignored by default, never read as an offset of zero.
    let p = presented(&t.ticket, b"me");
    assert_eq!(f.verifier.check(&p).unwrap().client_offset_ms, None);
}

#[test]
fn a_required_client_clock_that_is_absent_is_malformed() {
    let f = fixture(
        Policy::new(QUEUE).client_time(ClientTimeRule::Required),
        NOW_MS,
    );
    // The join is held to the same rule.
    let decision = admit_now(Duration::from_secs(60));
    assert_eq!(
        f.issuer
            .join(b"me", ClientTime::Absent, &decision)
            .unwrap_err(),
        Rejection::Malformed {
            reason: MalformedReason::ClientTimeMissing
        }
    );
    let t = f
        .issuer
        .join(b"me", ClientTime::Millis(NOW_MS), &decision)
        .unwrap();
    assert_eq!(
        f.verifier.check(&presented(&t.ticket, b"me")).unwrap_err(),
        Rejection::Malformed {
            reason: MalformedReason::ClientTimeMissing
        }
    );
    assert_eq!(
        client_clock(&f, &t.ticket, NOW_MS.to_string().as_bytes()),
        Ok(())
    );
}

#[test]
fn monitored_clock_findings_let_the_request_through_and_say_so() {
    let policy = Policy::new(QUEUE)
        .mode_for(RejectionCode::ClockSkew, Mode::Monitor)
        .mode_for(RejectionCode::Malformed, Mode::Monitor);
    let f = fixture(policy, NOW_MS);
    let t = f.admitted(b"me");
    for (header, expected) in [
        (&b"1795608000"[..], RejectionCode::ClockSkew),
        (b"garbage", RejectionCode::Malformed),
    ] {
        let p = Presented {
            client_time: ClientTime::parse(header),
            ..presented(&t.ticket, b"me")
        };
        let v = f.verifier.check(&p).expect("monitored, so let through");
        assert_eq!(v.monitored.map(|r| r.code()), Some(expected));
    }
}

#[test]
fn a_client_clock_moved_while_waiting_is_a_jump() {
    rt().block_on(async {
        let f = fixture(Policy::new(QUEUE), NOW_MS);
        // Joins with a clock 20 s ahead: that is the chain's baseline.
        let join = f
            .issuer
            .join(
                b"me",
                ClientTime::Millis(NOW_MS + 20_000),
                &wait(5, Duration::from_secs(60)),
            )
            .unwrap();
        assert_eq!(join.claims.clock_offset_ms, Some(20_000));
        f.clock.advance(Duration::from_secs(30));
        let now = NOW_MS + 30_000;
        // Heart-beats with the clock moved 2 minutes forward (still within
        // the 5-minute skew): a jump of 100 s, past the 60 s tolerance.
        let p = Presented {
            client_time: ClientTime::Millis(now + 120_000),
            ..presented(&join.ticket, b"me")
        };
        assert_eq!(
            f.issuer.check(&p).unwrap_err(),
            Rejection::ClockJump {
                moved_ms: 100_000,
                tolerance_ms: 60_000
            }
        );
        // Moved back by 65 s: within the backward tolerance (60 s + 10 s of
        // network delay), since delay only ever makes an offset smaller.
        let p = Presented {
            client_time: ClientTime::Millis(now - 45_000),
            ..presented(&join.ticket, b"me")
        };
        assert!(f.issuer.check(&p).is_ok());
        let p = Presented {
            client_time: ClientTime::Millis(now - 50_001),
            ..presented(&join.ticket, b"me")
        };
        assert_eq!(
            f.issuer.check(&p).unwrap_err().code(),
            RejectionCode::ClockJump
        );
    });
}
