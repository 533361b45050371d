//! The validated layer: typed config (`Duration`, `SocketAddr`, enums) built
//! from the raw serde layer. Conversion collects every error it finds, each
//! naming its JSON path (`routes[0].backends[1].port`), so `ringway check`
//! can print them all and the API can answer 400 naming the field.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::raw::{RawBackend, RawConfig, RawHealth, RawPath, RawRoute, RawSsl, RawTls};

/// One validation failure: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path of the offending field, e.g. `routes[1].backends[0].port`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

/// All the errors of one conversion (never empty when returned as `Err`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<FieldError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Parses JSON text into the raw layer; a syntax or type error names its path.
pub fn parse_json<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigErrors> {
    let de = &mut serde_json::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { field };
        let inner = e.into_inner();
        ConfigErrors(vec![FieldError { field, message: inner.to_string() }])
    })
}

/// Parses and validates a whole config file.
pub fn parse_config(text: &str) -> Result<Config, ConfigErrors> {
    let raw: RawConfig = parse_json(text)?;
    Config::try_from(&raw)
}

/// Identifies a backend across snapshots: the route key and the backend id
/// (ids are unique within a route, its paths included).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BackendKey {
    /// The route's key (lowercased vHost).
    pub route: Arc<str>,
    /// The backend's id.
    pub backend: Arc<str>,
}

/// Whether a certificate name (`a.example.com` or `*.example.com`) serves
/// `host` (TLS wildcards cover exactly one label). Case-insensitive.
pub fn name_covers(name: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.');
    match name.strip_prefix("*.") {
        Some(suffix) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && label != "*" && rest.eq_ignore_ascii_case(suffix)),
        None => name.trim_end_matches('.').eq_ignore_ascii_case(host),
    }
}

/// Balancing strategy of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Even cycle, weights ignored.
    RoundRobin,
    /// Smooth weighted round robin, as nginx does it.
    WeightedRoundRobin,
    /// Fewest in-flight requests (per worker), weight-aware.
    LeastConnections,
    /// Power of two random choices.
    Random,
    /// Consistent hashing of the client address.
    IpHash,
    /// Peak-EWMA of response time.
    LeastLatency,
}

impl Strategy {
    /// Parses the config name (`ROUND_ROBIN`, …).
    pub fn from_name(s: &str) -> Option<Strategy> {
        Some(match s {
            "ROUND_ROBIN" => Strategy::RoundRobin,
            "WEIGHTED_ROUND_ROBIN" => Strategy::WeightedRoundRobin,
            "LEAST_CONNECTIONS" => Strategy::LeastConnections,
            "RANDOM" => Strategy::Random,
            "IP_HASH" => Strategy::IpHash,
            "LEAST_LATENCY" => Strategy::LeastLatency,
            _ => return None,
        })
    }

    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::RoundRobin => "ROUND_ROBIN",
            Strategy::WeightedRoundRobin => "WEIGHTED_ROUND_ROBIN",
            Strategy::LeastConnections => "LEAST_CONNECTIONS",
            Strategy::Random => "RANDOM",
            Strategy::IpHash => "IP_HASH",
            Strategy::LeastLatency => "LEAST_LATENCY",
        }
    }
}

/// The validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Proxy listeners.
    pub listen: Vec<SocketAddr>,
    /// Worker count; `None` means one per core.
    pub workers: Option<usize>,
    /// Admin listener.
    pub admin: Option<Admin>,
    /// Global timeouts.
    pub timeouts: Timeouts,
    /// Global limits.
    pub limits: Limits,
    /// Default health settings (routes may override).
    pub health: Health,
    /// Access log.
    pub access_log: Option<PathBuf>,
    /// State file path, if set.
    pub state_file: Option<PathBuf>,
    /// Routes in config order.
    pub routes: Vec<Route>,
    /// TLS listeners and certificates, if any.
    pub tls: Option<Tls>,
    /// HTTP/2 from clients.
    pub http2: Http2,
    /// Automatic certificates, when configured.
    pub acme: Option<Acme>,
    /// Where the pid goes once serving.
    pub pid_file: Option<PathBuf>,
    /// Cluster mode (etcd), when configured.
    pub cluster: Option<Cluster>,
}

/// `cluster`: the API's state (routes, backends, maintenance flags,
/// certificates) lives in etcd under `prefix`, shared by every node.
#[derive(Clone, PartialEq, Eq)]
pub struct Cluster {
    /// etcd client URLs.
    pub endpoints: Vec<String>,
    /// Key prefix, without a trailing `/`.
    pub prefix: String,
    /// Connect and request timeout.
    pub dial: Duration,
    /// etcd user and password.
    pub auth: Option<(String, String)>,
    /// A PEM root for `https://` endpoints.
    pub ca_file: Option<PathBuf>,
    /// This node's name.
    pub node_id: String,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("endpoints", &self.endpoints)
            .field("prefix", &self.prefix)
            .field("node_id", &self.node_id)
            .field("auth", &self.auth.as_ref().map(|(u, _)| (u, "<redacted>")))
            .finish()
    }
}

/// This host's name (the default node id).
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "ringway".into())
}

fn cluster_from(c: &crate::raw::RawCluster, errs: &mut Errs) -> Option<Cluster> {
    let before = errs.list.len();
    let Some(e) = &c.etcd else {
        errs.push("cluster.etcd", "is required (where the shared state lives)");
        return None;
    };
    let endpoints = e.endpoints.clone().unwrap_or_default();
    if endpoints.is_empty() {
        errs.push("cluster.etcd.endpoints", "must list at least one etcd client URL");
    }
    for (i, u) in endpoints.iter().enumerate() {
        let rest = u.strip_prefix("http://").or_else(|| u.strip_prefix("https://"));
        if rest.is_none_or(|r| r.is_empty() || r.contains('/')) {
            errs.push(
                format!("cluster.etcd.endpoints[{i}]"),
                format!("{u:?} is not an http:// or https:// host:port URL"),
            );
        }
    }
    let prefix = e.prefix.clone().unwrap_or_else(|| "/ringway".into());
    let prefix_ok = prefix.starts_with('/')
        && !prefix.ends_with('/')
        && prefix.len() <= 256
        && prefix.bytes().all(|b| b.is_ascii_graphic());
    if !prefix_ok {
        errs.push("cluster.etcd.prefix", "must start with / and not end with one (printable ASCII, at most 256 bytes)");
    }
    let dial = ms(e.dial_ms, Duration::from_millis(2000), "cluster.etcd.dialMs", errs);
    let auth = match (&e.username, &e.password) {
        (Some(u), Some(p)) if !u.is_empty() => Some((u.clone(), p.clone())),
        (None, None) => None,
        _ => {
            errs.push("cluster.etcd.username", "username and password go together (username not empty)");
            None
        }
    };
    if matches!(&e.ca_file, Some(f) if f.is_empty()) {
        errs.push("cluster.etcd.caFile", "must name a PEM file");
    }
    let tls = endpoints.iter().filter(|u| u.starts_with("https://")).count();
    if tls != 0 && tls != endpoints.len() {
        errs.push("cluster.etcd.endpoints", "all https:// or all http:// (one connection setting for all)");
    } else if tls == 0 && e.ca_file.is_some() {
        errs.push("cluster.etcd.caFile", "is for https:// endpoints (these are http://)");
    }
    let node_id = c.node_id.clone().unwrap_or_else(host_name);
    let id_ok = !node_id.is_empty()
        && node_id.len() <= 128
        && node_id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !id_ok {
        errs.push("cluster.nodeId", format!("{node_id:?}: 1-128 letters, digits, '-', '_' or '.'"));
    }
    (errs.list.len() == before).then(|| Cluster {
        endpoints,
        prefix,
        dial,
        auth,
        ca_file: e.ca_file.as_ref().map(PathBuf::from),
        node_id,
    })
}

/// `acme`: where certificates for `autoHttps` routes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acme {
    /// The CA's directory URL (https).
    pub directory: String,
    /// Contact address for the account.
    pub email: Option<String>,
    /// A PEM root to trust for the directory's HTTPS.
    pub ca_file: Option<PathBuf>,
}

fn acme_from(a: &crate::raw::RawAcme, errs: &mut Errs) -> Option<Acme> {
    let before = errs.list.len();
    let directory = a.directory.clone().unwrap_or_default();
    if !directory.starts_with("https://") {
        errs.push("acme.directory", "must be the CA's https:// directory URL");
    }
    if let Some(e) = &a.email {
        let ok = e.split_once('@').is_some_and(|(u, d)| !u.is_empty() && valid_dns_name(d));
        if !ok {
            errs.push("acme.email", format!("{e:?} is not an email address"));
        }
    }
    if matches!(&a.ca_file, Some(f) if f.is_empty()) {
        errs.push("acme.caFile", "must name a PEM file");
    }
    (errs.list.len() == before).then(|| Acme {
        directory,
        email: a.email.clone(),
        ca_file: a.ca_file.as_ref().map(PathBuf::from),
    })
}

/// `http2`: HTTP/2 from clients (over TLS by ALPN; h2c by prior knowledge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Http2 {
    /// Offer `h2` by ALPN on TLS listeners.
    pub enabled: bool,
    /// Accept HTTP/2 with prior knowledge on plain listeners.
    pub h2c: bool,
    /// Streams a client may have open at once.
    pub max_concurrent_streams: u32,
    /// Largest decoded header list (also bounded by `limits.maxHeadBytes`
    /// once the request is written as HTTP/1.1).
    pub max_header_list_bytes: u32,
    /// Each stream's receive window.
    pub initial_stream_window: u32,
    /// The connection's receive window.
    pub initial_connection_window: u32,
    /// Largest frame accepted.
    pub max_frame_size: u32,
    /// A connection without open streams is closed (GOAWAY) after this.
    pub idle: Duration,
    /// Longest wait for the client's preface and SETTINGS.
    pub handshake: Duration,
}

impl Default for Http2 {
    fn default() -> Self {
        Http2 {
            enabled: true,
            h2c: false,
            max_concurrent_streams: 128,
            max_header_list_bytes: 65536,
            initial_stream_window: 256 * 1024,
            initial_connection_window: 1024 * 1024,
            max_frame_size: 16384,
            idle: Duration::from_secs(60),
            handshake: Duration::from_secs(10),
        }
    }
}

fn http2_from(raw: Option<&crate::raw::RawHttp2>, errs: &mut Errs) -> Http2 {
    let d = Http2::default();
    let Some(h) = raw else { return d };
    let f =
        |v, def: u32, min, max, field: &str, errs: &mut Errs| bounded(v, u64::from(def), min, max, field, errs) as u32;
    Http2 {
        enabled: h.enabled.unwrap_or(d.enabled),
        h2c: h.h2c.unwrap_or(d.h2c),
        max_concurrent_streams: f(
            h.max_concurrent_streams,
            d.max_concurrent_streams,
            1,
            10_000,
            "http2.maxConcurrentStreams",
            errs,
        ),
        max_header_list_bytes: f(
            h.max_header_list_bytes,
            d.max_header_list_bytes,
            1024,
            1 << 20,
            "http2.maxHeaderListBytes",
            errs,
        ),
        initial_stream_window: f(
            h.initial_stream_window_bytes,
            d.initial_stream_window,
            1024,
            (1 << 31) - 1,
            "http2.initialStreamWindowBytes",
            errs,
        ),
        initial_connection_window: f(
            h.initial_connection_window_bytes,
            d.initial_connection_window,
            65535,
            (1 << 31) - 1,
            "http2.initialConnectionWindowBytes",
            errs,
        ),
        max_frame_size: f(h.max_frame_bytes, d.max_frame_size, 16384, (1 << 24) - 1, "http2.maxFrameBytes", errs),
        idle: ms(h.idle_ms, d.idle, "http2.idleMs", errs),
        handshake: ms(h.handshake_ms, d.handshake, "http2.handshakeMs", errs),
    }
}

/// `tls`: listeners, certificates and protocol settings.
#[derive(Clone, Debug)]
pub struct Tls {
    /// TLS listen addresses.
    pub listen: Vec<SocketAddr>,
    /// Certificates as configured (path or PEM text; the data plane loads them).
    pub certificates: Vec<CertSource>,
    /// TLS 1.3 only (`minVersion: "1.3"`); otherwise 1.2 and 1.3.
    pub tls13_only: bool,
    /// Longest handshake.
    pub handshake: Duration,
}

/// A configured certificate: where its chain and key come from.
#[derive(Clone)]
pub struct CertSource {
    /// Chain (leaf first): a file path or PEM text.
    pub cert: String,
    /// Private key: a file path or PEM text.
    pub key: String,
    /// Served when nothing else matches.
    pub default: bool,
}

impl fmt::Debug for CertSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertSource").field("default", &self.default).field("key", &"<redacted>").finish()
    }
}

/// A route's own certificate (PEM text once loaded).
#[derive(Clone, PartialEq, Eq)]
pub struct Ssl {
    /// Chain, leaf first.
    pub cert: String,
    /// Private key (a secret).
    pub key: String,
}

impl fmt::Debug for Ssl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Ssl { <redacted> }")
    }
}

/// The Host a backend sees.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum HostHeader {
    /// The client's Host, as sent (the default).
    #[default]
    Client,
    /// The backend's hostname (with `:port` unless it is the scheme's default).
    Backend,
    /// This literal value.
    Literal(String),
}

impl HostHeader {
    /// Parses the config value.
    pub fn parse(s: &str) -> Option<HostHeader> {
        match s {
            "client" => Some(HostHeader::Client),
            "backend" => Some(HostHeader::Backend),
            v if !v.is_empty() && v.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b'@') => {
                Some(HostHeader::Literal(v.to_string()))
            }
            _ => None,
        }
    }

    /// The config value.
    pub fn name(&self) -> &str {
        match self {
            HostHeader::Client => "client",
            HostHeader::Backend => "backend",
            HostHeader::Literal(v) => v,
        }
    }
}

/// Admin listener settings.
#[derive(Clone)]
pub struct Admin {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Required bearer token, if any.
    pub token: Option<String>,
}

impl fmt::Debug for Admin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admin")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Upstream connect.
    pub connect: Duration,
    /// Response head and each later upstream read.
    pub upstream: Duration,
    /// Complete request head.
    pub client_head: Duration,
    /// Any wait for the client.
    pub idle: Duration,
    /// Graceful shutdown budget.
    pub drain: Duration,
    /// Admission queue wait.
    pub queue: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_millis(3000),
            upstream: Duration::from_millis(30000),
            client_head: Duration::from_millis(10000),
            idle: Duration::from_millis(60000),
            drain: Duration::from_millis(10000),
            queue: Duration::from_millis(5000),
        }
    }
}

/// Limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest request head in bytes.
    pub max_head_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Largest body; 0 = unlimited.
    pub max_body_bytes: u64,
    /// Most open client connections (all workers).
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_head_bytes: 65536, max_headers: 100, max_body_bytes: 0, max_connections: 10_000 }
    }
}

/// Health-check settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// Probe path.
    pub path: String,
    /// Interval; `None` means active checks are off.
    pub interval: Option<Duration>,
    /// Probe timeout.
    pub timeout: Duration,
    /// Consecutive passes to come up.
    pub rise: u32,
    /// Consecutive failures to go down.
    pub fall: u32,
    /// Accepted statuses, inclusive.
    pub expect_status: (u16, u16),
    /// Rest after a passive failure when active checks are off.
    pub fail_timeout: Duration,
    /// Probe interval while the backend is down (with jitter).
    pub down_interval: Duration,
    /// The probe's Host; `None`: the backend's `host[:port]`.
    pub host: Option<String>,
    /// Connect only (`type: "tcp"`), no HTTP.
    pub tcp_only: bool,
    /// A substring the body must contain.
    pub expect_body: Option<String>,
    /// Extra probe headers.
    pub headers: Vec<(String, String)>,
    /// `GET` or `HEAD`.
    pub method: String,
    /// gRPC's standard health check (`grpc.health.v1.Health/Check`, over
    /// HTTP/2) instead of an HTTP GET.
    pub grpc: bool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            path: "/".to_string(),
            interval: Some(Duration::from_millis(5000)),
            timeout: Duration::from_millis(3000),
            rise: 2,
            fall: 3,
            expect_status: (200, 399),
            fail_timeout: Duration::from_millis(10000),
            down_interval: Duration::from_millis(1000),
            host: None,
            tcp_only: false,
            expect_body: None,
            headers: Vec::new(),
            method: "GET".to_string(),
            grpc: false,
        }
    }
}

/// A virtual-host pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VHost {
    /// `*`: every host.
    Any,
    /// An exact, lowercased host name.
    Exact(String),
    /// `*.suffix`: one or more labels before `.suffix` (stored without `*.`).
    Wildcard(String),
}

impl VHost {
    /// Whether ACME (HTTP-01) can issue a certificate for this vHost: an
    /// exact DNS name, not a wildcard, the catch-all or an address.
    pub fn acme_can_issue(&self) -> bool {
        match self {
            VHost::Exact(h) => h.parse::<IpAddr>().is_err() && !h.starts_with('['),
            VHost::Wildcard(_) | VHost::Any => false,
        }
    }

    /// The route key: the lowercased pattern as written (`*`, `a.b`, `*.b`).
    pub fn key(&self) -> String {
        match self {
            VHost::Any => "*".to_string(),
            VHost::Exact(h) => h.clone(),
            VHost::Wildcard(s) => format!("*.{s}"),
        }
    }

    /// Parses a pattern; `None` if it is not a valid host pattern.
    pub fn parse(s: &str) -> Option<VHost> {
        let s = s.trim_end_matches('.').to_ascii_lowercase();
        if s == "*" {
            return Some(VHost::Any);
        }
        if let Some(rest) = s.strip_prefix("*.") {
            return valid_dns_name(rest).then(|| VHost::Wildcard(rest.to_string()));
        }
        if valid_dns_name(&s) || s.parse::<IpAddr>().is_ok() {
            return Some(VHost::Exact(s));
        }
        if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            if inner.parse::<std::net::Ipv6Addr>().is_ok() {
                return Some(VHost::Exact(s));
            }
        }
        None
    }
}

/// A route: a virtual host with its pools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Route id.
    pub id: String,
    /// Host pattern.
    pub vhost: VHost,
    /// Lowercased vHost: the route's key.
    pub key: String,
    /// The default pool.
    pub pool: Pool,
    /// Path rules, in config order.
    pub paths: Vec<PathRule>,
    /// Active requests per route before queueing (0 = unlimited).
    pub req_active: u32,
    /// Queue length beyond that.
    pub req_queue: u32,
    /// Headers set on forwarded requests (name, value).
    pub headers: Vec<(String, String)>,
    /// Retries on another backend.
    pub retries: u32,
    /// Body limit (0 = none).
    pub max_body_bytes: u64,
    /// Connect timeout.
    pub connect: Duration,
    /// Upstream read timeout.
    pub upstream: Duration,
    /// Queue wait.
    pub queue: Duration,
    /// Health settings (shared with the defaults when they are the
    /// defaults: 10,000 routes need not hold 10,000 copies).
    pub health: Arc<Health>,
    /// The route's own certificate.
    pub ssl: Option<Ssl>,
    /// Plain-HTTP requests get a 308 to HTTPS.
    pub auto_https: bool,
    /// The Host its backends see.
    pub host_header: HostHeader,
    /// Panic mode (0 = off): when fewer than this percentage of a pool's
    /// backends are up, requests go to all of them instead of a 503.
    pub panic_threshold_percent: u8,
    /// Auth, rate limit, CORS (one shared empty set for routes without).
    pub policies: Arc<crate::policy::Policies>,
}

/// A path-prefix rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    /// Prefix, starting with `/`, without a trailing `/` unless it is `/`.
    pub prefix: String,
    /// Strip the prefix before forwarding.
    pub strip_prefix: bool,
    /// The rule's pool.
    pub pool: Pool,
    /// Overrides the route's `host_header`.
    pub host_header: Option<HostHeader>,
    /// What the rule overrides of its route (`None`: the route's).
    pub overrides: RuleOverrides,
}

/// A path rule's overrides of its route's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuleOverrides {
    /// Retries.
    pub retries: Option<u32>,
    /// Body limit (0 = none).
    pub max_body_bytes: Option<u64>,
    /// Connect timeout.
    pub connect: Option<Duration>,
    /// Upstream timeout.
    pub upstream: Option<Duration>,
    /// Queue wait.
    pub queue: Option<Duration>,
    /// Health settings (the route's, overridden field by field).
    pub health: Option<Health>,
    /// Policies that replace the route's, policy by policy.
    pub policies: crate::policy::Policies,
}

impl Route {
    /// The health settings of the backend `id` (its path rule's, else the route's).
    pub fn health_of(&self, id: &str) -> &Health {
        self.paths
            .iter()
            .find(|p| p.pool.backends.iter().any(|b| b.id == id))
            .and_then(|p| p.overrides.health.as_ref())
            .unwrap_or(&self.health)
    }
}

/// A set of backends and how to choose among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pool {
    /// Strategy.
    pub strategy: Strategy,
    /// Backends.
    pub backends: Vec<Backend>,
}

/// One backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Stable id, unique within the route.
    pub id: String,
    /// IP literal or DNS name as configured.
    pub hostname: String,
    /// Port.
    pub port: u16,
    /// Weight >= 1.
    pub weight: u32,
    /// TLS to this backend, if set.
    pub tls: Option<BackendTls>,
    /// The protocol spoken to it.
    pub protocol: UpstreamProtocol,
}

/// The protocol ringway speaks to a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum UpstreamProtocol {
    /// HTTP/1.1 (pooled keep-alive connections).
    #[default]
    Http1,
    /// HTTP/2: with prior knowledge over plain TCP (h2c), or by ALPN over
    /// TLS (h2); streams multiplexed over few connections.
    Http2,
}

impl UpstreamProtocol {
    /// The config name (`tls` tells h2 from h2c).
    pub fn name(self, tls: bool) -> &'static str {
        match (self, tls) {
            (UpstreamProtocol::Http1, _) => "http/1.1",
            (UpstreamProtocol::Http2, false) => "h2c",
            (UpstreamProtocol::Http2, true) => "h2",
        }
    }
}

/// How a backend is reached over TLS.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendTls {
    /// SNI and verified name; `None` follows the Host choice.
    pub sni: Option<String>,
    /// CA bundle to verify with; `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Skip verification.
    pub insecure_skip_verify: bool,
}

impl Backend {
    /// The address when `hostname` is an IP literal.
    pub fn literal_addr(&self) -> Option<SocketAddr> {
        let h = self.hostname.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(&self.hostname);
        h.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, self.port))
    }
}

/// Whether `s` is a syntactically valid DNS name (letters, digits, hyphens, dots).
pub fn valid_dns_name(s: &str) -> bool {
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// Collects errors under a growing path.
pub(crate) struct Errs {
    pub(crate) list: Vec<FieldError>,
}

impl Errs {
    pub(crate) fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.list.push(FieldError { field: field.into(), message: message.into() });
    }
}

fn ms(v: Option<u64>, default: Duration, field: &str, errs: &mut Errs) -> Duration {
    match v {
        None => default,
        Some(0) => {
            errs.push(field, "must be greater than 0");
            default
        }
        Some(n) if n > 86_400_000 => {
            errs.push(field, "must be at most 86400000 (one day)");
            default
        }
        Some(n) => Duration::from_millis(n),
    }
}

fn bounded(v: Option<u64>, default: u64, min: u64, max: u64, field: &str, errs: &mut Errs) -> u64 {
    match v {
        None => default,
        Some(n) if n < min || n > max => {
            errs.push(field, format!("must be between {min} and {max}"));
            default
        }
        Some(n) => n,
    }
}

impl TryFrom<&RawConfig> for Config {
    type Error = ConfigErrors;

    fn try_from(raw: &RawConfig) -> Result<Config, ConfigErrors> {
        let mut errs = Errs { list: Vec::new() };
        let mut listen = Vec::new();
        match &raw.listen {
            None => listen.push(SocketAddr::from(([127, 0, 0, 1], 8080))),
            Some(list) => {
                if list.is_empty() {
                    errs.push("listen", "needs at least one address");
                }
                for (i, a) in list.iter().enumerate() {
                    match a.parse::<SocketAddr>() {
                        Ok(a) => listen.push(a),
                        Err(_) => errs.push(format!("listen[{i}]"), format!("{a:?} is not an IP:port address")),
                    }
                }
            }
        }
        let workers = match raw.workers {
            None | Some(0) => None,
            Some(n) if n > 1024 => {
                errs.push("workers", "must be at most 1024");
                None
            }
            Some(n) => Some(n as usize),
        };
        let admin = raw.admin.as_ref().and_then(|a| {
            let listen = a.listen.as_deref().unwrap_or("127.0.0.1:9901");
            let token = a.token.clone();
            if matches!(&token, Some(t) if t.is_empty()) {
                errs.push("admin.token", "must not be empty");
            }
            match listen.parse::<SocketAddr>() {
                Ok(l) => {
                    if !l.ip().is_loopback() && token.is_none() {
                        errs.push("admin.token", "required when admin.listen is not a loopback address");
                    }
                    Some(Admin { listen: l, token })
                }
                Err(_) => {
                    errs.push("admin.listen", format!("{listen:?} is not an IP:port address"));
                    None
                }
            }
        });
        let d = Timeouts::default();
        let t = raw.timeouts.clone().unwrap_or_default();
        let timeouts = Timeouts {
            connect: ms(t.connect_ms, d.connect, "timeouts.connectMs", &mut errs),
            upstream: ms(t.upstream_ms, d.upstream, "timeouts.upstreamMs", &mut errs),
            client_head: ms(t.client_head_ms, d.client_head, "timeouts.clientHeadMs", &mut errs),
            idle: ms(t.idle_ms, d.idle, "timeouts.idleMs", &mut errs),
            drain: ms(t.drain_ms, d.drain, "timeouts.drainMs", &mut errs),
            queue: ms(t.queue_ms, d.queue, "timeouts.queueMs", &mut errs),
        };
        let dl = Limits::default();
        let l = raw.limits.clone().unwrap_or_default();
        let limits = Limits {
            max_head_bytes: bounded(
                l.max_head_bytes,
                dl.max_head_bytes as u64,
                1024,
                1 << 20,
                "limits.maxHeadBytes",
                &mut errs,
            ) as usize,
            max_headers: bounded(l.max_headers, dl.max_headers as u64, 1, 256, "limits.maxHeaders", &mut errs) as usize,
            max_body_bytes: l.max_body_bytes.unwrap_or(0),
            max_connections: bounded(
                l.max_connections,
                dl.max_connections as u64,
                1,
                10_000_000,
                "limits.maxConnections",
                &mut errs,
            ) as usize,
        };
        let health = health_from(raw.health.as_ref(), &Health::default(), "health", &mut errs);
        let access_log = raw.access_log.as_ref().and_then(|a| a.path.as_ref()).map(PathBuf::from);
        let state_file = raw.state_file.as_ref().map(PathBuf::from);
        let tls = raw.tls.as_ref().and_then(|t| tls_from(t, raw.acme.is_some(), &mut errs));
        let http2 = http2_from(raw.http2.as_ref(), &mut errs);
        let acme = raw.acme.as_ref().and_then(|a| acme_from(a, &mut errs));
        let cluster = raw.cluster.as_ref().and_then(|c| cluster_from(c, &mut errs));
        if cluster.is_some() && acme.is_some() {
            // Each node would order on its own, and the CA's HTTP-01 check
            // reaches whichever node the balancer picks.
            errs.push("acme", "is not supported in cluster mode yet (give autoHttps routes a certificate)");
        }
        let defaults = RouteDefaults {
            timeouts,
            max_body_bytes: limits.max_body_bytes,
            health: Arc::new(health.clone()),
            tls_listener: tls.as_ref().is_some_and(|t| !t.listen.is_empty()),
            acme: acme.is_some(),
        };
        let mut routes = Vec::new();
        let mut keys = HashSet::new();
        for (i, r) in raw.routes.iter().flatten().enumerate() {
            let path = format!("routes[{i}]");
            if let Some(route) = route_from(r, &defaults, &path, &mut errs) {
                if !keys.insert(route.key.clone()) {
                    errs.push(format!("{path}.vHost"), format!("duplicate vHost {:?}", route.key));
                }
                routes.push(route);
            }
        }
        if errs.list.is_empty() {
            Ok(Config {
                listen,
                workers,
                admin,
                timeouts,
                limits,
                health,
                access_log,
                state_file,
                routes,
                tls,
                http2,
                acme,
                pid_file: raw.pid_file.as_ref().map(PathBuf::from),
                cluster,
            })
        } else {
            Err(ConfigErrors(errs.list))
        }
    }
}

fn tls_from(t: &RawTls, acme: bool, errs: &mut Errs) -> Option<Tls> {
    let before = errs.list.len();
    let mut listen = Vec::new();
    for (i, a) in t.listen.iter().flatten().enumerate() {
        match a.parse::<SocketAddr>() {
            Ok(a) => listen.push(a),
            Err(_) => errs.push(format!("tls.listen[{i}]"), format!("{a:?} is not an IP:port address")),
        }
    }
    let mut certificates = Vec::new();
    for (i, c) in t.certificates.iter().flatten().enumerate() {
        let field = format!("tls.certificates[{i}]");
        match (c.cert.as_deref(), c.key.as_deref()) {
            (Some(cert), Some(key)) if !cert.is_empty() && !key.is_empty() => certificates.push(CertSource {
                cert: cert.to_string(),
                key: key.to_string(),
                default: c.default.unwrap_or(false),
            }),
            (None, _) | (Some(""), _) => errs.push(join(&field, "cert"), "is required (a file path or PEM text)"),
            _ => errs.push(join(&field, "key"), "is required (a file path or PEM text)"),
        }
    }
    if certificates.iter().filter(|c| c.default).count() > 1 {
        errs.push("tls.certificates", "at most one certificate may be the default");
    }
    if !listen.is_empty() && t.certificates.as_ref().is_none_or(|c| c.is_empty()) && !acme {
        errs.push("tls.certificates", "a TLS listener needs at least one certificate (or acme to issue them)");
    }
    let tls13_only = match t.min_version.as_deref() {
        None | Some("1.2") => false,
        Some("1.3") => true,
        Some(v) => {
            errs.push(
                "tls.minVersion",
                format!("{v:?}: expected \"1.2\" or \"1.3\" (older versions are never offered)"),
            );
            false
        }
    };
    let handshake = ms(t.handshake_ms, Duration::from_secs(10), "tls.handshakeMs", errs);
    (errs.list.len() == before).then_some(Tls { listen, certificates, tls13_only, handshake })
}

fn ssl_from(s: &RawSsl, path: &str, errs: &mut Errs) -> Option<Ssl> {
    match (s.cert.as_deref(), s.key.as_deref()) {
        (Some(cert), Some(key)) if !cert.is_empty() && !key.is_empty() => {
            Some(Ssl { cert: cert.to_string(), key: key.to_string() })
        }
        _ => {
            errs.push(join(path, "ssl"), "needs both cert and key (PEM)");
            None
        }
    }
}

fn host_header_from(v: Option<&str>, path: &str, errs: &mut Errs) -> Option<HostHeader> {
    let v = v?;
    HostHeader::parse(v).or_else(|| {
        errs.push(join(path, "hostHeader"), "expected \"client\", \"backend\" or a host[:port] value");
        None
    })
}

/// What a route inherits from the global config.
#[derive(Debug, Clone)]
pub struct RouteDefaults {
    /// Global timeouts.
    pub timeouts: Timeouts,
    /// Global body limit.
    pub max_body_bytes: u64,
    /// Global health settings.
    pub health: Arc<Health>,
    /// A TLS listener exists (`autoHttps` needs one).
    pub tls_listener: bool,
    /// ACME is configured: an `autoHttps` route needs no certificate of
    /// its own (one is issued).
    pub acme: bool,
}

impl RouteDefaults {
    /// The defaults a config hands its routes.
    pub fn of(config: &Config) -> RouteDefaults {
        RouteDefaults {
            timeouts: config.timeouts,
            max_body_bytes: config.limits.max_body_bytes,
            health: Arc::new(config.health.clone()),
            tls_listener: config.tls.as_ref().is_some_and(|t| !t.listen.is_empty()),
            acme: config.acme.is_some(),
        }
    }
}

/// Validates one route on its own (the API's entry point); errors are
/// named relative to the route (`backends[0].port`).
pub fn validate_route(raw: &RawRoute, defaults: &RouteDefaults) -> Result<Route, ConfigErrors> {
    let mut errs = Errs { list: Vec::new() };
    match route_from(raw, defaults, "", &mut errs) {
        Some(r) if errs.list.is_empty() => Ok(r),
        _ => Err(ConfigErrors(errs.list)),
    }
}

pub(crate) fn join(base: &str, field: &str) -> String {
    if base.is_empty() {
        field.to_string()
    } else {
        format!("{base}.{field}")
    }
}

fn health_from(raw: Option<&RawHealth>, base: &Health, path: &str, errs: &mut Errs) -> Health {
    let Some(h) = raw else { return base.clone() };
    let mut out = base.clone();
    if let Some(p) = &h.path {
        if !p.starts_with('/') || p.bytes().any(|b| b <= b' ' || b == 0x7f) {
            errs.push(join(path, "path"), "must start with / and contain no spaces or control bytes");
        } else {
            out.path = p.clone();
        }
    }
    match h.interval_ms {
        Some(0) => out.interval = None,
        Some(n) => out.interval = Some(ms(Some(n), Duration::from_secs(5), &join(path, "intervalMs"), errs)),
        None => {}
    }
    out.timeout = ms(h.timeout_ms, base.timeout, &join(path, "timeoutMs"), errs);
    out.rise = bounded(h.rise, base.rise.into(), 1, 1000, &join(path, "rise"), errs) as u32;
    out.fall = bounded(h.fall, base.fall.into(), 1, 1000, &join(path, "fall"), errs) as u32;
    out.fail_timeout = ms(h.fail_timeout_ms, base.fail_timeout, &join(path, "failTimeoutMs"), errs);
    out.down_interval = ms(h.down_interval_ms, base.down_interval, &join(path, "downIntervalMs"), errs);
    if out.down_interval < Duration::from_millis(50) {
        errs.push(join(path, "downIntervalMs"), "must be at least 50");
    }
    if let Some(host) = &h.host {
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b'@') {
            errs.push(join(path, "host"), "must be a host[:port] value");
        } else {
            out.host = Some(host.clone());
        }
    }
    match h.kind.as_deref() {
        None => {}
        Some("http") => out.tcp_only = false,
        Some("tcp") => out.tcp_only = true,
        Some(k) => errs.push(join(path, "type"), format!("{k:?}: expected \"http\" or \"tcp\"")),
    }
    if let Some(g) = h.grpc {
        if g && out.tcp_only {
            errs.push(join(path, "grpc"), "a gRPC check is not a TCP check: leave \"type\" out or \"http\"");
        }
        out.grpc = g;
    }
    if let Some(b) = &h.expect_body {
        if b.is_empty() || b.len() > 1024 {
            errs.push(join(path, "expectBody"), "must be 1 to 1024 bytes");
        } else {
            out.expect_body = Some(b.clone());
        }
    }
    match h.method.as_deref() {
        None => {}
        Some(m @ ("GET" | "HEAD")) => out.method = m.to_string(),
        Some(m) => errs.push(join(path, "method"), format!("{m:?}: expected \"GET\" or \"HEAD\"")),
    }
    if let Some(hs) = &h.headers {
        out.headers.clear();
        for (k, v) in hs {
            let field = join(path, &format!("headers.{k}"));
            if k.is_empty() || !k.bytes().all(is_tchar) {
                errs.push(field, "is not a valid header name");
            } else if ["host", "connection", "content-length", "transfer-encoding"]
                .iter()
                .any(|r| k.eq_ignore_ascii_case(r))
            {
                errs.push(field, "is set by the probe (use health.host for the Host)");
            } else if v.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
                errs.push(field, "value contains control characters");
            } else {
                out.headers.push((k.clone(), v.clone()));
            }
        }
    }
    if let Some(v) = &h.expect_status {
        match parse_status_range(v) {
            Some(r) => out.expect_status = r,
            None => {
                errs.push(join(path, "expectStatus"), "must be a status (200) or a range (\"200-399\") within 100-599")
            }
        }
    }
    out
}

fn parse_status_range(v: &serde_json::Value) -> Option<(u16, u16)> {
    let (lo, hi) = match v {
        serde_json::Value::Number(n) => {
            let n = n.as_u64()?;
            (n, n)
        }
        serde_json::Value::String(s) => match s.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let n = s.trim().parse().ok()?;
                (n, n)
            }
        },
        _ => return None,
    };
    ((100..=599).contains(&lo) && (100..=599).contains(&hi) && lo <= hi).then_some((lo as u16, hi as u16))
}

fn strategy_from(raw: Option<&str>, default: Strategy, field: String, errs: &mut Errs) -> Strategy {
    match raw {
        None => default,
        Some(s) => Strategy::from_name(s).unwrap_or_else(|| {
            errs.push(
                field,
                format!(
                    "unknown strategy {s:?} (expected ROUND_ROBIN, WEIGHTED_ROUND_ROBIN, LEAST_CONNECTIONS, RANDOM, IP_HASH or LEAST_LATENCY)"
                ),
            );
            default
        }),
    }
}

fn route_from(r: &RawRoute, d: &RouteDefaults, path: &str, errs: &mut Errs) -> Option<Route> {
    let before = errs.list.len();
    let vhost = match r.v_host.as_deref() {
        None => {
            errs.push(join(path, "vHost"), "is required (use \"*\" for every host)");
            None
        }
        Some(v) => VHost::parse(v).or_else(|| {
            errs.push(join(path, "vHost"), format!("{v:?} is not a host name, *.domain or *"));
            None
        }),
    };

    let ssl = r.ssl.as_ref().and_then(|s| ssl_from(s, path, errs));
    if r.auto_https == Some(true) && !d.tls_listener {
        errs.push(join(path, "autoHttps"), "needs a TLS listener (tls.listen)");
    }
    let host_header = host_header_from(r.host_header.as_deref(), path, errs).unwrap_or_default();
    let strategy = strategy_from(r.strategy.as_deref(), Strategy::RoundRobin, join(path, "strategy"), errs);
    let mut ids = HashSet::new();
    let backends = backends_from(r.backends.as_deref().unwrap_or(&[]), &join(path, "backends"), &mut ids, errs);
    let health = health_from(r.health.as_ref(), &d.health, &join(path, "health"), errs);
    let mut paths = Vec::new();
    let mut prefixes = HashSet::new();
    for (i, p) in r.paths.iter().flatten().enumerate() {
        let pp = join(path, &format!("paths[{i}]"));
        if let Some(rule) = path_from(p, strategy, &health, &pp, &mut ids, errs) {
            if !prefixes.insert(rule.prefix.clone()) {
                errs.push(join(&pp, "prefix"), format!("duplicate prefix {:?}", rule.prefix));
            }
            paths.push(rule);
        }
    }
    let mut headers = Vec::new();
    for (k, v) in r.headers.iter().flatten() {
        let field = join(path, &format!("headers.{k}"));
        if k.is_empty() || !k.bytes().all(is_tchar) {
            errs.push(field, "is not a valid header name");
        } else if is_reserved_header(k) {
            errs.push(field, "is managed by ringway and cannot be set");
        } else if v.bytes().any(|b| (b < b' ' && b != b'\t') || b == 0x7f) {
            errs.push(field, "value contains control characters");
        } else {
            headers.push((k.clone(), v.clone()));
        }
    }
    let req_active = bounded(r.req_active_length, 0, 0, 10_000_000, &join(path, "reqActiveLength"), errs) as u32;
    let req_queue = bounded(r.req_queue_length, 0, 0, 10_000_000, &join(path, "reqQueueLength"), errs) as u32;
    let retries = bounded(r.retries, 2, 0, 16, &join(path, "retries"), errs) as u32;
    let panic_threshold_percent =
        bounded(r.panic_threshold_percent, 0, 0, 100, &join(path, "panicThresholdPercent"), errs) as u8;
    let connect = ms(r.connect_ms, d.timeouts.connect, &join(path, "connectMs"), errs);
    let upstream = ms(r.upstream_ms, d.timeouts.upstream, &join(path, "upstreamMs"), errs);
    let queue = ms(r.queue_ms, d.timeouts.queue, &join(path, "queueMs"), errs);
    let raw_policies = crate::policy::RawPolicies {
        auth: r.auth.as_ref(),
        rate_limit: r.rate_limit.as_ref(),
        cors: r.cors.as_ref(),
        circuit_breaker: r.circuit_breaker.as_ref(),
        auth_provider: r.auth_provider.as_ref(),
        cache: r.cache.as_ref(),
    };
    let policies = crate::policy::policies_from(raw_policies, path, errs);
    let vhost = vhost?;
    if errs.list.len() != before {
        return None;
    }
    let key = vhost.key();
    Some(Route {
        id: r.id.clone().unwrap_or_else(|| key.clone()),
        key,
        vhost,
        pool: Pool { strategy, backends },
        paths,
        req_active,
        req_queue,
        headers,
        retries,
        max_body_bytes: r.max_body_bytes.unwrap_or(d.max_body_bytes),
        connect,
        upstream,
        queue,
        health: shared_health(health, &d.health),
        ssl,
        auto_https: r.auto_https.unwrap_or(false),
        host_header,
        panic_threshold_percent,
        policies: crate::policy::shared(policies),
    })
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_reserved_header(name: &str) -> bool {
    const RESERVED: &[&str] = &[
        "host",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "expect",
    ];
    RESERVED.iter().any(|r| r.eq_ignore_ascii_case(name))
}

fn path_from(
    p: &RawPath,
    route_strategy: Strategy,
    route_health: &Health,
    path: &str,
    ids: &mut HashSet<String>,
    errs: &mut Errs,
) -> Option<PathRule> {
    let prefix = match p.prefix.as_deref() {
        None => {
            errs.push(join(path, "prefix"), "is required");
            return None;
        }
        Some(s) if !s.starts_with('/') || s.bytes().any(|b| b <= b' ' || b == b'?' || b == b'#' || b == 0x7f) => {
            errs.push(join(path, "prefix"), "must start with / and contain no spaces, ? or #");
            return None;
        }
        Some(s) => {
            let t = s.trim_end_matches('/');
            if t.is_empty() {
                "/".to_string()
            } else {
                t.to_string()
            }
        }
    };
    let strategy = strategy_from(p.strategy.as_deref(), route_strategy, join(path, "strategy"), errs);
    let backends = backends_from(p.backends.as_deref().unwrap_or(&[]), &join(path, "backends"), ids, errs);
    let host_header = host_header_from(p.host_header.as_deref(), path, errs);
    let timeout =
        |v: Option<u64>, field: &str, errs: &mut Errs| v.map(|_| ms(v, Duration::ZERO, &join(path, field), errs));
    let overrides = RuleOverrides {
        retries: p.retries.map(|_| bounded(p.retries, 0, 0, 16, &join(path, "retries"), errs) as u32),
        max_body_bytes: p.max_body_bytes,
        connect: timeout(p.connect_ms, "connectMs", errs),
        upstream: timeout(p.upstream_ms, "upstreamMs", errs),
        queue: timeout(p.queue_ms, "queueMs", errs),
        health: p.health.as_ref().map(|h| health_from(Some(h), route_health, &join(path, "health"), errs)),
        policies: crate::policy::policies_from(
            crate::policy::RawPolicies {
                auth: p.auth.as_ref(),
                rate_limit: p.rate_limit.as_ref(),
                cors: p.cors.as_ref(),
                circuit_breaker: p.circuit_breaker.as_ref(),
                auth_provider: p.auth_provider.as_ref(),
                cache: p.cache.as_ref(),
            },
            path,
            errs,
        ),
    };
    Some(PathRule {
        prefix,
        strip_prefix: p.strip_prefix.unwrap_or(false),
        pool: Pool { strategy, backends },
        host_header,
        overrides,
    })
}

fn backends_from(list: &[RawBackend], path: &str, ids: &mut HashSet<String>, errs: &mut Errs) -> Vec<Backend> {
    let mut out = Vec::new();
    for (i, b) in list.iter().enumerate() {
        let bp = format!("{path}[{i}]");
        if let Some(b) = backend_from(b, &bp, errs) {
            if !ids.insert(b.id.clone()) {
                errs.push(format!("{bp}.id"), format!("duplicate backend id {:?} in this route", b.id));
            }
            out.push(b);
        }
    }
    // Kept for the route's life: no spare capacity (10,000 one-backend
    // routes would carry 3 MB of it).
    out.shrink_to_fit();
    out
}

/// Health settings as an `Arc`, shared with every equal value seen
/// before (10,000 routes that all say `"health": {"intervalMs": 0}` hold
/// one copy, not 10,000: 2 MB). At most 64 distinct values are kept.
fn shared_health(h: Health, default: &Arc<Health>) -> Arc<Health> {
    static SEEN: std::sync::Mutex<Vec<Arc<Health>>> = std::sync::Mutex::new(Vec::new());
    if h == **default {
        return Arc::clone(default);
    }
    let Ok(mut seen) = SEEN.lock() else { return Arc::new(h) };
    if let Some(s) = seen.iter().find(|s| ***s == h) {
        return Arc::clone(s);
    }
    let a = Arc::new(h);
    if seen.len() < 64 {
        seen.push(Arc::clone(&a));
    }
    a
}

/// Validates one backend (the API's entry point for `POST …/backends`).
pub fn validate_backend(raw: &RawBackend) -> Result<Backend, ConfigErrors> {
    let mut errs = Errs { list: Vec::new() };
    match backend_from(raw, "", &mut errs) {
        Some(b) if errs.list.is_empty() => Ok(b),
        _ => Err(ConfigErrors(errs.list)),
    }
}

fn backend_from(b: &RawBackend, path: &str, errs: &mut Errs) -> Option<Backend> {
    let before = errs.list.len();
    let hostname = match b.hostname.as_deref() {
        None => {
            errs.push(join(path, "hostname"), "is required");
            String::new()
        }
        Some(h) => {
            let bare = h.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(h);
            if bare.parse::<IpAddr>().is_err() && !valid_dns_name(h.trim_end_matches('.')) {
                errs.push(join(path, "hostname"), format!("{h:?} is not an IP address or host name"));
            }
            h.to_ascii_lowercase()
        }
    };
    let port = match b.port {
        None => {
            errs.push(join(path, "port"), "is required");
            0
        }
        Some(p) if p == 0 || p > 65535 => {
            errs.push(join(path, "port"), format!("{p} is not a port (1-65535)"));
            0
        }
        Some(p) => p as u16,
    };
    let weight = bounded(b.weight, 1, 1, 1000, &join(path, "weight"), errs) as u32;
    let id = match &b.id {
        Some(id) if id.is_empty() || id.len() > 128 || !id.bytes().all(|c| c.is_ascii_graphic() && c != b'/') => {
            errs.push(join(path, "id"), "must be 1-128 visible characters without /");
            String::new()
        }
        Some(id) => id.clone(),
        None => format!("{hostname}:{port}"),
    };
    let tls = match b.tls {
        Some(true) => Some(BackendTls {
            sni: b.sni.as_ref().map(|s| s.to_ascii_lowercase()),
            ca_file: b.ca_file.as_ref().map(PathBuf::from),
            insecure_skip_verify: b.insecure_skip_verify.unwrap_or(false),
        }),
        _ => {
            for (set, field) in [
                (b.sni.is_some(), "sni"),
                (b.ca_file.is_some(), "caFile"),
                (b.insecure_skip_verify == Some(true), "insecureSkipVerify"),
            ] {
                if set {
                    errs.push(join(path, field), "only applies with \"tls\": true");
                }
            }
            None
        }
    };
    if let Some(sni) = tls.as_ref().and_then(|t| t.sni.as_deref()) {
        if !valid_dns_name(sni.trim_end_matches('.')) {
            errs.push(join(path, "sni"), format!("{sni:?} is not a host name"));
        }
    }
    let protocol = match (b.protocol.as_deref(), tls.is_some()) {
        (None | Some("http/1.1"), _) => UpstreamProtocol::Http1,
        (Some("h2c"), false) | (Some("h2"), true) => UpstreamProtocol::Http2,
        (Some("h2c"), true) => {
            errs.push(join(path, "protocol"), "\"h2c\" is HTTP/2 without TLS: use \"h2\" with \"tls\": true");
            UpstreamProtocol::Http1
        }
        (Some("h2"), false) => {
            errs.push(join(path, "protocol"), "\"h2\" needs \"tls\": true (\"h2c\" is HTTP/2 without TLS)");
            UpstreamProtocol::Http1
        }
        (Some(p), _) => {
            errs.push(join(path, "protocol"), format!("{p:?} is not one of \"http/1.1\", \"h2c\", \"h2\""));
            UpstreamProtocol::Http1
        }
    };
    (errs.list.len() == before).then_some(Backend { id, hostname, port, weight, tls, protocol })
}
