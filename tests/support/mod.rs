//! Fixtures for ringway's integration tests: scripted backends, a running
//! ringway process, and a raw HTTP/1.1 client. Everything is std::net +
//! threads on 127.0.0.1, and every blocking read has a timeout.
//!
//! Each test binary says `mod support;` and `use support::*;`, so
//! everything is re-exported here:
//! - `backend`: scripted backends (`Backend`, `BackendHandle`, `SeenRequest`);
//! - `client`: the raw HTTP/1.1 client and the admin API client;
//! - `config`: config builders (`route`, `config`, `catch_all`, …);
//! - `ringway`: the ringway process (`Ringway`, `TempDir`, `temp_path`, …);
//! - `tls`: a test CA (openssl CLI), `curl_https`, `s_client`;
//! - `h2raw`: a raw HTTP/2 frame client over h2c (`H2Client`, `Frame`, HPACK);
//! - `h2tools`: `curl_h2c`, `h2load`, `nghttp`, and /proc probes (`cpu_ms`, `rss_kb`).
#![allow(dead_code)]

mod backend;
mod client;
mod config;
mod h2raw;
mod h2tools;
mod ringway;
mod tls;

// A test binary that uses nothing from one of these would warn.
#[allow(unused_imports)]
pub use backend::*;
#[allow(unused_imports)]
pub use client::*;
#[allow(unused_imports)]
pub use config::*;
#[allow(unused_imports)]
pub use h2raw::*;
#[allow(unused_imports)]
pub use h2tools::*;
#[allow(unused_imports)]
pub use ringway::*;
#[allow(unused_imports)]
pub use tls::*;

use std::time::Duration;

pub use serde_json::{json, Value};

/// How long any single socket read may block.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// Hashing and deterministic data
// ---------------------------------------------------------------------------

/// FNV-1a 64 of `data`, as 16 hex digits.
pub fn hash(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

/// `len` deterministic, non-repeating-looking bytes.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) ^ (i >> 8) ^ (i >> 16)) as u8).collect()
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
