//! ringway's control brain, without I/O: the config model (raw serde types
//! and validated types), the messages that cross the channels, and the
//! health state machine. No sockets, no runtime: everything here is tested
//! without either. The I/O that drives it lives in the `ringway` crate's
//! `controller` module.
#![warn(missing_docs, unreachable_pub)]

pub mod api;
pub mod cluster;
pub mod health;
pub mod messages;
pub mod model;
pub mod policy;
pub mod raw;
pub mod state;
pub mod stats;

#[cfg(test)]
mod tests;
