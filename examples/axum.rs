//! A protected booking route in an axum router.
//!
//! `cargo run --example axum`, then `curl -i -X POST localhost:3000/book`
//! (refused: `missing`). The waiting room (see the `reservation` example)
//! mints the tickets that get through.
use std::sync::Arc;

use axum::routing::{get, post};
use axum::{Extension, Router};
use queuegate::layer::QueueGateLayer;
use queuegate::{
    KeyRing, MemoryReplayStore, Metrics, Policy, ReplayMode, SystemClock, Verified, Verifier,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The waiting room's secret (from configuration in a real host).
    let keys = Arc::new(KeyRing::new(1, &[7u8; 32])?);
    let store = Arc::new(MemoryReplayStore::new());
    let booking = Policy::new("vaccine-53-54")
        .scope("book")
        .replay(ReplayMode::SingleUse);
    let verifier = Verifier::new(keys, booking, SystemClock, store)?;
    let metrics = Metrics::new();
    let gate = QueueGateLayer::builder(verifier)
        .metrics(metrics.clone())
        .build()?;

    let app = Router::new().route("/book", post(book).layer(gate)).route(
        "/metrics",
        get(move || async move { metrics.render_prometheus() }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await?;
    Ok(())
}

async fn book(Extension(ticket): Extension<Verified>) -> String {
    format!("booked for queue ticket {}\n", ticket.claims.ticket_id)
}
