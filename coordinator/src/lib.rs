//! The coordinator as a library: the binary in `main.rs` wires these together,
//! and the integration tests drive the store and the lease protocol directly.

pub mod api;
pub mod callback;
pub mod config;
pub mod ctx;
pub mod inbox;
pub mod intake;
pub mod lease;
pub mod metrics;
pub mod store;
