//! The layer around a bare hyper 1.x service, no framework.
//!
//! `cargo run --example hyper`, then `curl -i localhost:3001/` (refused:
//! `missing`, as an `application/problem+json` document).
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use queuegate::layer::QueueGateLayer;
use queuegate::{KeyRing, MemoryReplayStore, Policy, SystemClock, Verified, Verifier};
use tower::ServiceBuilder;

async fn protected(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let ticket = req.extensions().get::<Verified>().expect("the layer ran");
    let text = format!("admitted, chain {}\n", ticket.claims.ticket_id);
    Ok(Response::new(Full::new(Bytes::from(text))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = Arc::new(KeyRing::new(1, &[7u8; 32])?);
    let store = Arc::new(MemoryReplayStore::new());
    let verifier = Verifier::new(keys, Policy::new("vaccine-53-54"), SystemClock, store)?;
    let service = ServiceBuilder::new()
        .layer(QueueGateLayer::new(verifier))
        .service_fn(protected);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:3001").await?;
    loop {
        let (tcp, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
