//! The room's HTTP side: what the crate serves to browsers.

mod client;

pub use client::CLIENT_JS;
