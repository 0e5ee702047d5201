//! One route behind the waiting room: `cargo run --example quickstart --features axum`, open :3000
use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::routing::{get, post};
use axum::{response::Html, Router};
use queuegate::layer::QueueGateLayer;
use queuegate::room::http::{CrossSiteGuard, RoomEndpoints, RoomSessions, SessionKeys};
use queuegate::room::{MemoryRoomState, WaitingRoom};
use queuegate::{Issuer, KeyRing, MemoryReplayStore, Policy, ReplayMode, SystemClock, Verifier};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.into());
    let secret = [7u8; 32]; // yours: 32+ random bytes from your configuration
    let keys = Arc::new(KeyRing::new(1, &secret)?);
    let store = Arc::new(MemoryReplayStore::new());
    let policy = Policy::new("concert");
    // The waiting room: admits 2 people a second; a page must check in within 90 s.
    let live = Duration::from_millis(env("LIVENESS_MS", "90000").parse()?);
    let issuer = Issuer::new(keys.clone(), policy.clone(), SystemClock, store.clone())?;
    let room = WaitingRoom::builder(issuer, MemoryRoomState::new())
        .admit_per_sec(env("ADMIT_PER_SEC", "2").parse()?)?
        .liveness(live, live)?
        .build()?;
    let sessions = RoomSessions::new(SessionKeys::new(1, &secret)?, CrossSiteGuard::new("http")?);
    // The protected route: an admitted ticket gets in, once.
    let once = policy.scope("buy").replay(ReplayMode::SingleUse);
    let gate = QueueGateLayer::builder(Verifier::new(keys, once, SystemClock, store)?).build()?;
    let buy = post(|| async { "You have a ticket.\n" }).layer(gate);

    let app = Router::new() // your existing app
        .route("/", get(|| async { Html(PAGE) }))
        .route("/buy", buy)
        .merge(RoomEndpoints::new(Arc::new(room), sessions).router());
    let listener = tokio::net::TcpListener::bind(env("ADDR", "127.0.0.1:3000")).await?;
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    Ok(axum::serve(listener, app).await?)
}

const PAGE: &str = r#"<!doctype html><meta charset="utf-8"><title>Concert tickets</title>
<p id="status" aria-live="polite">Joining the queue…</p>
<p id="result"></p>
<script type="module">
import { WaitingRoom } from '/queue/client.js';
const show = (id) => (e) => { document.getElementById(id).textContent = e.text; };
const room = new WaitingRoom({
  onUpdate: show('status'),
  onRetrying: show('status'),
  onRefused: show('status'),
  onClosed: show('status'),
  onAdmitted: async () => {
    // Only here, with the admitted ticket (room.fetch sends it), and once.
    const res = await room.fetch('/buy', { method: 'POST' });
    show('result')({ text: await res.text() });
    room.leave();
  },
});
room.join();
</script>"#;
