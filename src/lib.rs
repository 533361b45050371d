//! ringway: an HTTP reverse proxy and load balancer for Linux, thread per
//! core on io_uring.
//!
//! Shape (see DESIGN.md): `runtime` binds the sockets and spawns one pinned
//! worker per core, each a shared-nothing monoio event loop (`worker`) with
//! its own router, balancers, pools and buffers; and one control thread
//! (`controller`) that owns the state, runs health checks and broadcasts
//! immutable snapshots over channels. A request flows through `proxy`:
//! head parsed by our `http` codec → `router` → `balance` → `upstream` pool →
//! forward and stream back, with every failure classified once in `error`.
#![warn(unreachable_pub)]

pub mod accesslog;
pub mod balance;
pub mod conn;
pub mod controller;
pub mod ctl;
pub mod demo;
pub mod error;
pub mod http;
pub mod proxy;
pub mod route;
pub mod router;
pub mod runtime;
pub mod serve;
pub mod stats;
pub mod tls;
pub mod upstream;
pub mod worker;
