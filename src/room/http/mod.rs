//! The room's HTTP side: what the crate serves to browsers.

pub mod admin;
mod client;

pub use client::CLIENT_JS;
