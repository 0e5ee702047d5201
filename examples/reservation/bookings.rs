//! The demo's bookings: the booking site's own data, not the crate's.
//!
//! In memory by default (the `reservations` and `seats_taken` maps of
//! [`App`]). With `--redis` or `--redis-cluster` they live in the same
//! Redis as the room ([`Shared`]), so every instance sees every booking: a
//! booking retried on another instance (the layer answers it
//! `replayed`, reason `ConsumedBySameClient`) gets the same
//! `reservation_id`, and no slot seats more than [`SLOT_SEATS`] whatever
//! instance booked it.
//!
//! Keys (prefix `queuegate-demo-<queue>`, the replay store's):
//!
//! | key | hash tag | what |
//! |---|---|---|
//! | `<prefix>:booking:{<ticket id>}` | the chain's | `<reservation id> <slot>`, kept a day |
//! | `<prefix>:seats:{<prefix>:<slot>}` | the slot's | seats taken, kept a day after the last booking |
//!
//! A booking is two steps on two slots of a Cluster (no script may span
//! them): take a seat (`seat.lua`: refuses when the slot is full, else
//! `INCR`), then `SET NX` the chain's booking; if another booking of the
//! same chain got there first, the seat is given back and that booking is
//! the answer. Reservation ids are 64 random bits (`R-` and 16 hex digits),
//! unique across instances without a shared counter. A process that dies
//! between the two steps leaves one seat counted that nobody holds.

use std::time::Duration;

use queuegate::TicketId;

#[cfg(feature = "redis")]
use super::random_hex;
use super::{hex, lock, App, Reservation, SLOT_IDS, SLOT_SEATS};

/// An in-memory booking as the map keeps it: the reservation id's 6
/// random bytes and the slot's index in [`SLOT_IDS`] (7 bytes, no heap;
/// two `String`s took about 150 bytes a booking, which the crowd's memory
/// figure counted against the people still waiting).
#[derive(Debug, Clone, Copy)]
pub struct Stored {
    id: [u8; 6],
    slot: u8,
}

impl Stored {
    fn reservation(self) -> Reservation {
        Reservation {
            id: format!("R-{}", hex(&self.id)),
            slot: SLOT_IDS[usize::from(self.slot)].to_owned(),
        }
    }
}

/// What a booking did.
#[derive(Debug, Clone)]
pub enum Booked {
    /// A new booking.
    New(Reservation),
    /// The chain had booked already (a retry): that booking.
    Existing(Reservation),
    /// The slot has no seat left; nothing was written.
    SlotTaken,
}

/// Books `slot` for the chain `ticket`, once per chain.
pub async fn book(app: &App, ticket: &TicketId, slot: &str) -> Result<Booked, String> {
    if let Some(shared) = &app.shared_bookings {
        return shared.book(ticket, slot).await;
    }
    let mut map = lock(&app.reservations);
    if let Some(booked) = map.get(ticket) {
        return Ok(Booked::Existing(booked.reservation()));
    }
    let index = SLOT_IDS
        .iter()
        .position(|id| *id == slot)
        .ok_or_else(|| format!("no slot {slot}"))?;
    let mut seats = lock(&app.seats_taken);
    let taken = seats.entry(slot.to_owned()).or_insert(0);
    if *taken >= SLOT_SEATS {
        return Ok(Booked::SlotTaken);
    }
    *taken += 1;
    let mut id = [0u8; 6];
    getrandom::getrandom(&mut id).expect("the operating system's random source failed");
    let booked = Stored {
        id,
        slot: u8::try_from(index).expect("12 slots"),
    };
    map.insert(*ticket, booked);
    Ok(Booked::New(booked.reservation()))
}

/// The booking the chain `ticket` made, if any.
pub async fn find(app: &App, ticket: &TicketId) -> Result<Option<Reservation>, String> {
    if let Some(shared) = &app.shared_bookings {
        return shared.find(ticket).await;
    }
    Ok(lock(&app.reservations).get(ticket).map(|b| b.reservation()))
}

/// Bookings made (on Redis: seats taken over every slot, by every
/// instance).
pub async fn count(app: &App) -> Result<u64, String> {
    if let Some(shared) = &app.shared_bookings {
        return shared.count().await;
    }
    Ok(lock(&app.reservations).len() as u64)
}

/// How long Redis keeps a booking and a slot's count: a day, far longer
/// than any ticket that could retry the booking lives (a real site keeps
/// its bookings in its own database).
pub const KEEP: Duration = Duration::from_secs(24 * 3600);

/// Bookings in Redis (a build without the `redis` feature has none).
#[cfg(not(feature = "redis"))]
pub enum Shared {}

#[cfg(not(feature = "redis"))]
impl Shared {
    async fn book(&self, _: &TicketId, _: &str) -> Result<Booked, String> {
        match *self {}
    }
    async fn find(&self, _: &TicketId) -> Result<Option<Reservation>, String> {
        match *self {}
    }
    async fn count(&self) -> Result<u64, String> {
        match *self {}
    }
}

/// Bookings in Redis or a Redis Cluster, shared by every instance.
#[cfg(feature = "redis")]
pub struct Shared {
    conn: Conn,
    prefix: String,
    slots: Vec<String>,
}

#[cfg(feature = "redis")]
enum Conn {
    One(redis::aio::ConnectionManager),
    Cluster(redis::cluster_async::ClusterConnection),
}

#[cfg(feature = "redis")]
const SEAT_LUA: &str = include_str!("seat.lua");

/// How long one Redis call may take before the booking fails.
#[cfg(feature = "redis")]
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

#[cfg(feature = "redis")]
impl Shared {
    /// On one Redis at `url`, keys under `prefix`; `slots` are the slot ids
    /// [`count`] adds up.
    pub async fn connect(url: &str, prefix: &str, slots: Vec<String>) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let conn = client
            .get_connection_manager()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            conn: Conn::One(conn),
            prefix: prefix.to_owned(),
            slots,
        })
    }

    /// On the Redis Cluster of `seeds`.
    pub async fn connect_cluster(
        seeds: &[String],
        prefix: &str,
        slots: Vec<String>,
    ) -> Result<Self, String> {
        let client =
            redis::cluster::ClusterClient::new(seeds.to_vec()).map_err(|e| e.to_string())?;
        let conn = client
            .get_async_connection()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Self {
            conn: Conn::Cluster(conn),
            prefix: prefix.to_owned(),
            slots,
        })
    }

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let call = async {
            match &self.conn {
                Conn::One(c) => cmd.query_async(&mut c.clone()).await,
                Conn::Cluster(c) => cmd.query_async(&mut c.clone()).await,
            }
        };
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err("Redis did not answer in time".to_owned()),
        }
    }

    fn booking_key(&self, ticket: &TicketId) -> String {
        format!("{}:booking:{{{ticket}}}", self.prefix)
    }

    fn seats_key(&self, slot: &str) -> String {
        format!("{0}:seats:{{{0}:{slot}}}", self.prefix)
    }

    async fn book(&self, ticket: &TicketId, slot: &str) -> Result<Booked, String> {
        if let Some(booked) = self.find(ticket).await? {
            return Ok(Booked::Existing(booked));
        }
        let keep_ms = KEEP.as_millis() as u64;
        let seats = self.seats_key(slot);
        let taken: i64 = self
            .query(
                redis::cmd("EVAL")
                    .arg(SEAT_LUA)
                    .arg(1)
                    .arg(&seats)
                    .arg(SLOT_SEATS)
                    .arg(keep_ms),
            )
            .await?;
        if taken < 0 {
            return Ok(Booked::SlotTaken);
        }
        let booked = Reservation {
            id: format!("R-{}", random_hex(8)),
            slot: slot.to_owned(),
        };
        let set: Option<String> = self
            .query(
                redis::cmd("SET")
                    .arg(self.booking_key(ticket))
                    .arg(format!("{} {}", booked.id, booked.slot))
                    .arg("NX")
                    .arg("PX")
                    .arg(keep_ms),
            )
            .await?;
        if set.is_some() {
            return Ok(Booked::New(booked));
        }
        // The same chain booked at the same moment elsewhere: its booking
        // stands, this seat goes back.
        let _: i64 = self.query(redis::cmd("DECR").arg(&seats)).await?;
        match self.find(ticket).await? {
            Some(first) => Ok(Booked::Existing(first)),
            None => Err("the chain's booking vanished".to_owned()),
        }
    }

    async fn find(&self, ticket: &TicketId) -> Result<Option<Reservation>, String> {
        let text: Option<String> = self
            .query(redis::cmd("GET").arg(self.booking_key(ticket)))
            .await?;
        Ok(text.and_then(|t| {
            let (id, slot) = t.split_once(' ')?;
            Some(Reservation {
                id: id.to_owned(),
                slot: slot.to_owned(),
            })
        }))
    }

    async fn count(&self) -> Result<u64, String> {
        let mut total = 0;
        for slot in &self.slots {
            let taken: Option<u64> = self
                .query(redis::cmd("GET").arg(self.seats_key(slot)))
                .await?;
            total += taken.unwrap_or(0);
        }
        Ok(total)
    }
}
