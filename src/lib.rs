//! ringway: an HTTP reverse proxy and load balancer for Linux, thread per
//! core on io_uring.
//!
//! Threads (see DESIGN.md): `runtime` binds the sockets and spawns one
//! pinned worker per core, each a shared-nothing monoio event loop whose
//! body is `serve` (listen, accept plain and TLS, apply the inbox) over the
//! per-core state in `worker` (routes, pools, buffers, timers, counters);
//! and one control thread (`controller`) that owns the state, runs health
//! checks, builds immutable snapshots (with the TLS certificates parsed
//! once, `tls`) and broadcasts them over channels.
//!
//! One connection: `conn::Stream` (plain TCP or TLS, the only place that
//! knows sockets; or one HTTP/2 stream, to a client or a backend, seen as
//! an HTTP/1.1 exchange: `conn::h2stream`, `conn::h2up`, with `http2`
//! running the client connection) → `proxy`, where each request runs as
//! phases over one context — `proxy::phases` (read the head with our
//! `http` codec, route with `router` to a `route::RouteRt`, admit, the
//! route's `policy` chain) → `proxy::forward`
//! (pick with `balance`, an `upstream` pool connection, retries decided by
//! the `error` type) → `proxy::relay` (the response, one function per body
//! framing) → recorded in `stats` and the `accesslog`.
//!
//! Dependencies point one way: `proxy` → `worker`, `route`, `router`,
//! `upstream`, `conn`; `router` and `route` know nothing of the worker or
//! the request path; `serve` wires the worker to `proxy`; everything may
//! use the I/O-free `control` crate, which uses nothing of this one.
#![warn(unreachable_pub)]

pub mod accesslog;
pub mod balance;
pub mod conn;
pub mod controller;
pub mod ctl;
pub mod demo;
pub mod error;
pub mod http;
pub mod http2;
pub mod policy;
pub mod proxy;
pub mod route;
pub mod router;
pub mod runtime;
pub mod serve;
pub mod stats;
pub mod tls;
pub mod upgrade;
pub mod upstream;
pub mod worker;
