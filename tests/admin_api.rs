//! The operator API (`room::http::admin`) on a memory room: the token
//! guards every call, bad values change nothing, the state comes back,
//! closing the room refuses joins and heartbeats with the message.

use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use queuegate::room::http::admin::{Admin, LiveInputs};
use queuegate::room::{MemoryRoomState, RoomError, Setting};
use queuegate::{
    ClientTime, Issuer, KeyRing, ManualClock, MemoryReplayStore, Metrics, Policy, Presented,
    WaitingRoom,
};

const T0: i64 = 1_700_000_000_000;
const TOKEN: &str = "operator-token-0123456789";

type Room = WaitingRoom<ManualClock, MemoryReplayStore, MemoryRoomState>;

fn room() -> (Room, ManualClock) {
    let clock = ManualClock::new(T0);
    let keys = Arc::new(KeyRing::new(1, &[7u8; 32]).unwrap());
    let issuer = Issuer::new(
        keys,
        Policy::new("admin"),
        clock.clone(),
        Arc::new(MemoryReplayStore::new()),
    )
    .unwrap();
    let room = WaitingRoom::builder(issuer, MemoryRoomState::new())
        .admit_per_sec(5.0)
        .unwrap()
        .opens_at_ms(T0 + 60_000)
        .liveness(Duration::from_secs(10), Duration::from_secs(300))
        .unwrap()
        .build()
        .unwrap();
    (room, clock)
}

fn auth(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    h
}

fn live() -> LiveInputs {
    LiveInputs {
        metrics: Metrics::new().snapshot(),
        bookings: Some(0),
        clock: None,
        store_ok: Some(true),
    }
}

async fn call(
    admin: &Admin,
    room: &Room,
    method: Method,
    path: &str,
    headers: &HeaderMap,
    body: &str,
) -> (StatusCode, serde_json::Value) {
    let res = admin
        .respond(room, &method, path, headers, body.as_bytes(), live)
        .await;
    let status = res.status();
    let value = serde_json::from_slice(res.body()).unwrap_or(serde_json::Value::Null);
    (status, value)
}

#[tokio::test]
async fn a_missing_or_wrong_token_gets_401_and_changes_nothing() {
    let (room, _) = room();
    let admin = Admin::new(TOKEN).unwrap();
    for headers in [
        HeaderMap::new(),
        auth("operator-token-0123456788"),
        auth(""),
    ] {
        for (method, path, body) in [
            (Method::GET, "/admin/api/room", ""),
            (
                Method::POST,
                "/admin/api/room",
                r#"{"paused":true,"admit_per_sec":0}"#,
            ),
            (
                Method::POST,
                "/admin/api/close",
                r#"{"message":"sold out"}"#,
            ),
            (
                Method::POST,
                "/admin/api/amnesty",
                r#"{"from_ms":1,"until_ms":2}"#,
            ),
            (Method::GET, "/admin/api/live", ""),
        ] {
            let res = admin
                .respond(&room, &method, path, &headers, body.as_bytes(), live)
                .await;
            assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
            assert_eq!(res.headers()[header::WWW_AUTHENTICATE], "Bearer");
            assert!(!String::from_utf8_lossy(res.body()).contains(TOKEN));
        }
    }
    assert!(!room.is_paused());
    assert_eq!(room.admit_per_sec(), 5.0);
    assert_eq!(room.closed_message(), None);
    assert_eq!(room.amnesty().window(), None);
    // The page itself carries no secret and needs no token.
    let page = admin
        .respond(&room, &Method::GET, "/admin", &HeaderMap::new(), b"", live)
        .await;
    assert_eq!(page.status(), StatusCode::OK);
    assert!(String::from_utf8_lossy(page.body()).contains("sessionStorage"));
}

#[tokio::test]
async fn changes_come_back_and_bad_values_change_nothing() {
    let (room, clock) = room();
    let admin = Admin::new(TOKEN).unwrap();
    let h = auth(TOKEN);
    let (s, v) = call(&admin, &room, Method::GET, "/admin/api/room", &h, "").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["waiting"], 0);
    assert_eq!(v["admitted"], 0);
    assert_eq!(v["admit_per_sec"], 5.0);
    assert_eq!(v["paused"], false);
    assert_eq!(v["opens_at_ms"], T0 + 60_000);

    let body = format!(
        r#"{{"admit_per_sec": 12.5, "paused": true, "opens_at_ms": {}}}"#,
        T0 + 120_000
    );
    let (s, v) = call(&admin, &room, Method::POST, "/admin/api/room", &h, &body).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        (&v["admit_per_sec"], &v["paused"], &v["opens_at_ms"]),
        (&12.5.into(), &true.into(), &(T0 + 120_000).into())
    );

    // One bad value among good ones: 400 problem+json, nothing changed.
    for bad in [
        r#"{"admit_per_sec": -1, "paused": false}"#,
        r#"{"admit_per_sec": 3, "paused": "no"}"#,
        r#"{"paused": false, "opens_at_ms": 1.5}"#,
        r#"{"paused": false, "colour": 1}"#,
        r#"{"paused": false"#,
        r#"{"paused": false, "max_admitted": -2}"#,
        "[1]",
    ] {
        let res = admin
            .respond(
                &room,
                &Method::POST,
                "/admin/api/room",
                &h,
                bad.as_bytes(),
                live,
            )
            .await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(
            res.headers()[header::CONTENT_TYPE],
            "application/problem+json"
        );
    }
    assert!(room.is_paused());
    assert_eq!(room.admit_per_sec(), 12.5);
    assert_eq!(room.control_changes(Setting::AdmitPerSec), 1);

    // After the opening the time cannot move: 409, and nothing else
    // in the same body is applied either.
    clock.advance(Duration::from_secs(121));
    let body = format!(r#"{{"opens_at_ms": {}, "paused": false}}"#, T0 + 500_000);
    let (s, _) = call(&admin, &room, Method::POST, "/admin/api/room", &h, &body).await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert!(room.is_paused());
    assert_eq!(room.opens_at_ms(), T0 + 120_000);
}

#[tokio::test]
async fn closing_refuses_joins_and_heartbeats_with_the_message() {
    let (room, clock) = room();
    clock.advance(Duration::from_secs(61));
    let admin = Admin::new(TOKEN).unwrap();
    let h = auth(TOKEN);
    let t = room.join(b"someone", ClientTime::Absent).await.unwrap();
    let (s, _) = call(
        &admin,
        &room,
        Method::POST,
        "/admin/api/close",
        &h,
        r#"{"message":""}"#,
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = call(
        &admin,
        &room,
        Method::POST,
        "/admin/api/close",
        &h,
        r#"{"message":"Sold out: all slots are booked."}"#,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["closed_message"], "Sold out: all slots are booked.");
    let e = room
        .heartbeat(&Presented {
            ticket: Some(t.ticket.as_bytes()),
            binding: Some(b"someone"),
            client_time: ClientTime::Absent,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), "room_closed");
    assert_eq!(e.status(), StatusCode::GONE);
    assert_eq!(e.to_string(), "Sold out: all slots are booked.");
    let e = room.join(b"late", ClientTime::Absent).await.unwrap_err();
    assert!(matches!(e, RoomError::Closed { .. }));
    let (s, _) = call(&admin, &room, Method::DELETE, "/admin/api/close", &h, "").await;
    assert_eq!(s, StatusCode::OK);
    assert!(room.join(b"late", ClientTime::Absent).await.is_ok());
    assert_eq!(room.control_changes(Setting::Closed), 2);

    let (s, v) = call(&admin, &room, Method::GET, "/admin/api/live", &h, "").await;
    assert_eq!(s, StatusCode::OK);
    let people = v["room"]["waiting"].as_u64().unwrap() + v["room"]["admitted"].as_u64().unwrap();
    assert_eq!(people, 2, "{v}");
    assert!(v["rejections_total"]["offline_resumed"].is_number());
    assert_eq!(v["offsets"]["buckets"].as_array().unwrap().len(), 13);
}
