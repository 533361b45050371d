//! The raw layer: serde types that mirror the JSON exactly (camelCase,
//! unknown fields rejected). Nothing here is validated; `model` turns these
//! into typed values and names the offending field when it cannot.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The config file, as written.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawConfig {
    /// Proxy listen addresses.
    pub listen: Option<Vec<String>>,
    /// Worker count; absent or 0 means one per core.
    pub workers: Option<u64>,
    /// Admin listener; absent means none.
    pub admin: Option<RawAdmin>,
    /// Timeouts in milliseconds.
    pub timeouts: Option<RawTimeouts>,
    /// Size and count limits.
    pub limits: Option<RawLimits>,
    /// Default health-check settings.
    pub health: Option<RawHealth>,
    /// Access log settings.
    pub access_log: Option<RawAccessLog>,
    /// Where the API's changes are persisted.
    pub state_file: Option<String>,
    /// The routes.
    pub routes: Option<Vec<RawRoute>>,
    /// TLS listeners and their certificates.
    pub tls: Option<RawTls>,
    /// HTTP/2 from clients.
    pub http2: Option<RawHttp2>,
    /// Automatic certificates for `autoHttps` routes.
    pub acme: Option<RawAcme>,
    /// Where ringway writes its pid once it serves (upgrades rewrite it).
    pub pid_file: Option<String>,
    /// Cluster mode: the API's state lives in etcd, shared by every node.
    pub cluster: Option<RawCluster>,
}

/// `cluster`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawCluster {
    /// Where the shared state lives.
    pub etcd: Option<RawEtcd>,
    /// This node's name (default: the host name).
    pub node_id: Option<String>,
}

/// `cluster.etcd`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawEtcd {
    /// Client URLs (`http://` or `https://`).
    pub endpoints: Option<Vec<String>>,
    /// Key prefix (`/ringway/prod`).
    pub prefix: Option<String>,
    /// Connect and request timeout, milliseconds.
    pub dial_ms: Option<u64>,
    /// etcd user (with `password`).
    pub username: Option<String>,
    /// etcd password (a secret).
    pub password: Option<String>,
    /// A PEM root to trust for `https://` endpoints.
    pub ca_file: Option<String>,
}

/// `acme`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawAcme {
    /// The CA's directory URL.
    pub directory: Option<String>,
    /// Contact address for the account.
    pub email: Option<String>,
    /// A PEM root to trust for the directory's HTTPS (a private CA).
    pub ca_file: Option<String>,
}

/// `http2`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawHttp2 {
    /// Offer `h2` by ALPN on TLS listeners.
    pub enabled: Option<bool>,
    /// Accept HTTP/2 with prior knowledge on plain listeners.
    pub h2c: Option<bool>,
    /// Streams a client may have open at once.
    pub max_concurrent_streams: Option<u64>,
    /// Largest decoded header list.
    pub max_header_list_bytes: Option<u64>,
    /// Each stream's receive window.
    pub initial_stream_window_bytes: Option<u64>,
    /// The connection's receive window.
    pub initial_connection_window_bytes: Option<u64>,
    /// Largest frame we accept.
    pub max_frame_bytes: Option<u64>,
    /// A connection without open streams closes after this long.
    pub idle_ms: Option<u64>,
    /// Longest wait for the connection preface and SETTINGS.
    pub handshake_ms: Option<u64>,
}

/// `tls`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawTls {
    /// TLS listen addresses.
    pub listen: Option<Vec<String>>,
    /// Certificates served on them.
    pub certificates: Option<Vec<RawCertSource>>,
    /// "1.2" or "1.3".
    pub min_version: Option<String>,
    /// Longest handshake.
    pub handshake_ms: Option<u64>,
}

/// One configured certificate: a file path or PEM text for each part.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawCertSource {
    /// Certificate chain (leaf first): a path or PEM text.
    pub cert: Option<String>,
    /// Private key: a path or PEM text.
    pub key: Option<String>,
    /// Served when SNI is absent, an IP literal, or matches nothing.
    pub default: Option<bool>,
}

/// A route's own certificate (the seed's `ssl`).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawSsl {
    /// Certificate chain, PEM (or a path, in the config file).
    pub cert: Option<String>,
    /// Private key, PEM (or a path, in the config file).
    pub key: Option<String>,
}

/// `admin`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawAdmin {
    /// Admin listen address.
    pub listen: Option<String>,
    /// Bearer token required on every admin request.
    pub token: Option<String>,
}

/// `timeouts`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawTimeouts {
    /// Upstream connect timeout.
    pub connect_ms: Option<u64>,
    /// Wait for the response head and each later upstream read.
    pub upstream_ms: Option<u64>,
    /// Wait for a complete request head.
    pub client_head_ms: Option<u64>,
    /// Any wait for the client.
    pub idle_ms: Option<u64>,
    /// Graceful shutdown budget.
    pub drain_ms: Option<u64>,
    /// Longest wait in an admission queue.
    pub queue_ms: Option<u64>,
}

/// `limits`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawLimits {
    /// Largest request head.
    pub max_head_bytes: Option<u64>,
    /// Most header fields in a request head.
    pub max_headers: Option<u64>,
    /// Largest request body; 0 means none.
    pub max_body_bytes: Option<u64>,
    /// Most open client connections, all workers together.
    pub max_connections: Option<u64>,
}

/// `health`, global or per route (field by field).
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawHealth {
    /// Probe path.
    pub path: Option<String>,
    /// Probe interval; 0 turns active checks off.
    pub interval_ms: Option<u64>,
    /// Probe timeout.
    pub timeout_ms: Option<u64>,
    /// Passes to come back up.
    pub rise: Option<u64>,
    /// Failures to go down.
    pub fall: Option<u64>,
    /// Accepted status range: `200`, `"200-399"`.
    pub expect_status: Option<serde_json::Value>,
    /// With active checks off, how long a passively failed backend rests.
    pub fail_timeout_ms: Option<u64>,
    /// Probe interval while a backend is down (prompt recovery).
    pub down_interval_ms: Option<u64>,
    /// Host header of the probe; default: the backend's `host[:port]`.
    pub host: Option<String>,
    /// `"http"` (default) or `"tcp"` (connect only).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// A substring the response body must contain.
    pub expect_body: Option<String>,
    /// Extra request headers of the probe.
    pub headers: Option<BTreeMap<String, String>>,
    /// `"GET"` (default) or `"HEAD"`.
    pub method: Option<String>,
    /// Probe with gRPC's `grpc.health.v1.Health/Check` over HTTP/2.
    pub grpc: Option<bool>,
}

/// `accessLog`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawAccessLog {
    /// File to append JSON lines to; `"-"` is standard output.
    pub path: Option<String>,
}

/// The seed-compatible RouteConfig, plus ringway's additive fields.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawRoute {
    /// Route id; defaults to the vHost.
    pub id: Option<String>,
    /// `api.example.com`, `*.example.com` or `*`.
    #[serde(rename = "vHost")]
    pub v_host: Option<String>,
    /// Balancing strategy.
    pub strategy: Option<String>,
    /// Redirect plain-HTTP requests to HTTPS (308).
    pub auto_https: Option<bool>,
    /// Active requests before queueing; 0 = unlimited.
    pub req_active_length: Option<u64>,
    /// Queued requests beyond that; 0 = no queue.
    pub req_queue_length: Option<u64>,
    /// Not supported yet: must be absent or null.
    pub auth_provider: Option<serde_json::Value>,
    /// Headers set on every forwarded request.
    pub headers: Option<BTreeMap<String, String>>,
    /// The route's default backend pool.
    pub backends: Option<Vec<RawBackend>>,
    /// The route's own certificate for its vHost; null = none.
    pub ssl: Option<RawSsl>,
    /// The Host the backends see: "client" (default), "backend" or a literal.
    pub host_header: Option<String>,
    /// Panic mode: below this share of healthy backends, use them all.
    pub panic_threshold_percent: Option<u64>,
    /// Path-prefix rules with their own pools.
    pub paths: Option<Vec<RawPath>>,
    /// Retries on another backend.
    pub retries: Option<u64>,
    /// Per-route override of `limits.maxBodyBytes`.
    pub max_body_bytes: Option<u64>,
    /// Per-route override of `timeouts.connectMs`.
    pub connect_ms: Option<u64>,
    /// Per-route override of `timeouts.upstreamMs`.
    pub upstream_ms: Option<u64>,
    /// Per-route override of `timeouts.queueMs`.
    pub queue_ms: Option<u64>,
    /// Per-route override of `health`, field by field.
    pub health: Option<RawHealth>,
    /// Who may pass (Basic or Bearer).
    pub auth: Option<crate::policy::RawAuth>,
    /// Requests per second per client (or per header value).
    pub rate_limit: Option<crate::policy::RawRateLimit>,
    /// Cross-origin requests from browsers.
    pub cors: Option<crate::policy::RawCors>,
    /// Per-backend circuit breaking on live traffic.
    pub circuit_breaker: Option<crate::policy::RawCircuitBreaker>,
    /// A response cache.
    pub cache: Option<crate::policy::RawCache>,
}

/// One path rule.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawPath {
    /// Path prefix, starting with `/`.
    pub prefix: Option<String>,
    /// Remove the prefix before forwarding.
    pub strip_prefix: Option<bool>,
    /// Strategy; defaults to the route's.
    pub strategy: Option<String>,
    /// The rule's pool.
    pub backends: Option<Vec<RawBackend>>,
    /// Overrides the route's `hostHeader`.
    pub host_header: Option<String>,
    /// Overrides the route's `retries`.
    pub retries: Option<u64>,
    /// Overrides the route's `maxBodyBytes`.
    pub max_body_bytes: Option<u64>,
    /// Overrides the route's `connectMs`.
    pub connect_ms: Option<u64>,
    /// Overrides the route's `upstreamMs`.
    pub upstream_ms: Option<u64>,
    /// Overrides the route's `queueMs`.
    pub queue_ms: Option<u64>,
    /// Overrides the route's `health`, field by field.
    pub health: Option<RawHealth>,
    /// Replaces the route's `auth`.
    pub auth: Option<crate::policy::RawAuth>,
    /// Replaces the route's `rateLimit`.
    pub rate_limit: Option<crate::policy::RawRateLimit>,
    /// Replaces the route's `cors`.
    pub cors: Option<crate::policy::RawCors>,
    /// Replaces the route's `circuitBreaker`.
    pub circuit_breaker: Option<crate::policy::RawCircuitBreaker>,
    /// Replaces the route's `authProvider`.
    pub auth_provider: Option<serde_json::Value>,
    /// Replaces the route's `cache`.
    pub cache: Option<crate::policy::RawCache>,
}

/// One backend.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawBackend {
    /// Stable id; defaults to `hostname:port`.
    pub id: Option<String>,
    /// IP address or DNS name.
    pub hostname: Option<String>,
    /// TCP port.
    pub port: Option<u64>,
    /// Weight, default 1.
    pub weight: Option<u64>,
    /// Reach the backend over TLS.
    pub tls: Option<bool>,
    /// SNI (and verified name) for TLS; default: follows the Host choice.
    pub sni: Option<String>,
    /// CA bundle (PEM file) to verify the backend with; default: system roots.
    pub ca_file: Option<String>,
    /// Do not verify the backend's certificate (never the default).
    pub insecure_skip_verify: Option<bool>,
    /// "http/1.1" (default), "h2c" (HTTP/2, prior knowledge) or "h2"
    /// (HTTP/2 over TLS by ALPN).
    pub protocol: Option<String>,
}
