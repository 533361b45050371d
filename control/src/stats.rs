//! Statistics: the deltas workers ship, and the control thread's merge of
//! them into totals and sliding windows. I/O-free.
//!
//! Workers count with plain per-core cells on the hot path and send a
//! `StatsDelta` (what changed since their last flush) once a second and
//! whenever `GET /stats` asks, so totals are exact after a flush. Latency
//! is a log-linear histogram (exact below 16 µs, then 4 buckets per power
//! of two: at most ~19 % relative error), cheap to merge and to query.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde_json::{json, Value};

use crate::model::BackendKey;

/// Buckets of the latency histogram.
pub const BUCKETS: usize = 16 + 4 * 28;

/// The bucket of a latency in microseconds.
pub fn bucket_of(us: u64) -> usize {
    if us < 16 {
        return us as usize;
    }
    let p = 63 - us.leading_zeros() as usize; // floor(log2), >= 4
    let sub = ((us >> (p - 2)) & 3) as usize;
    (16 + (p - 4) * 4 + sub).min(BUCKETS - 1)
}

/// The upper bound (µs) of a bucket, for percentiles.
pub fn bucket_upper(i: usize) -> u64 {
    if i < 16 {
        return i as u64;
    }
    let p = (i - 16) / 4 + 4;
    let sub = ((i - 16) % 4) as u64;
    ((4 + sub + 1) << (p - 2)) - 1
}

/// Counters of one route in a delta (or a total).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    /// Requests answered.
    pub requests: u64,
    /// By status class: 1xx … 5xx.
    pub status: [u64; 5],
    /// 502 answers.
    pub e502: u64,
    /// 503 answers.
    pub e503: u64,
    /// 504 answers.
    pub e504: u64,
    /// Attempts that timed out (connect or response).
    pub timeouts: u64,
    /// Retries on another backend.
    pub retries: u64,
    /// Refused by admission (queue full or wait expired).
    pub rejected: u64,
    /// Bytes sent to clients.
    pub bytes: u64,
    /// Sum of request durations, µs (for the Prometheus histogram).
    pub latency_sum_us: u64,
}

impl Counters {
    fn add(&mut self, o: &Counters) {
        self.requests += o.requests;
        for (a, b) in self.status.iter_mut().zip(o.status) {
            *a += b;
        }
        self.e502 += o.e502;
        self.e503 += o.e503;
        self.e504 += o.e504;
        self.timeouts += o.timeouts;
        self.retries += o.retries;
        self.rejected += o.rejected;
        self.bytes += o.bytes;
        self.latency_sum_us += o.latency_sum_us;
    }
}

/// One route's change since the last flush.
#[derive(Debug, Clone)]
pub struct RouteDelta {
    /// Route key.
    pub key: Arc<str>,
    /// Counters.
    pub counters: Counters,
    /// Latency histogram: its (bucket, count) pairs in
    /// `StatsDelta::route_latency`.
    pub latency: std::ops::Range<u32>,
}

/// One backend's change since the last flush.
#[derive(Debug, Clone)]
pub struct BackendDelta {
    /// Which backend.
    pub key: BackendKey,
    /// Requests sent to it.
    pub requests: u64,
    /// Failed attempts.
    pub errors: u64,
    /// In flight on this worker now (a level, not a delta).
    pub inflight: u32,
    /// Latency to the response head: its pairs in
    /// `StatsDelta::backend_latency`.
    pub latency: std::ops::Range<u32>,
    /// Its circuit breaker is open (or half-open) on this worker (a level).
    pub circuit_open: bool,
}

/// What one worker ships.
#[derive(Debug, Clone, Default)]
pub struct StatsDelta {
    /// Routes with traffic since the last flush.
    pub routes: Vec<RouteDelta>,
    /// Backends with traffic (or in-flight requests).
    pub backends: Vec<BackendDelta>,
    /// Requests that matched no route (404) or failed before routing (4xx).
    pub unrouted: Counters,
    /// This worker's resource levels now.
    pub levels: Levels,
    /// Requests by protocol and HTTP/2 events since the last delta.
    pub protocols: Protocols,
    /// Every route's latency pairs (and those of unrouted requests, which
    /// count in the global histogram only), one flat list: one allocation
    /// per delta, not one per route.
    pub route_latency: Vec<(u16, u64)>,
    /// Every backend's latency pairs.
    pub backend_latency: Vec<(u16, u64)>,
}

/// Requests by the protocol the client spoke, and HTTP/2 events
/// (counters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Protocols {
    /// Requests over HTTP/1.x.
    pub h1: u64,
    /// Requests over HTTP/2 (streams).
    pub h2: u64,
    /// HTTP/2 connections accepted.
    pub h2_connections: u64,
    /// HTTP/2 connections closed on a protocol error or a flood.
    pub h2_connection_errors: u64,
    /// Streams the client reset.
    pub h2_reset_by_client: u64,
    /// Streams reset by ringway because the response could not complete.
    pub h2_reset_incomplete: u64,
    /// Answers served from a response cache.
    pub cache_hits: u64,
    /// Cacheable requests that were not in the cache.
    pub cache_misses: u64,
}

impl Protocols {
    /// Adds `o` to these.
    pub fn add(&mut self, o: &Protocols) {
        self.h1 += o.h1;
        self.h2 += o.h2;
        self.h2_connections += o.h2_connections;
        self.h2_connection_errors += o.h2_connection_errors;
        self.h2_reset_by_client += o.h2_reset_by_client;
        self.h2_reset_incomplete += o.h2_reset_incomplete;
        self.cache_hits += o.cache_hits;
        self.cache_misses += o.cache_misses;
    }

    fn cache_json(&self) -> Value {
        let looked = self.cache_hits + self.cache_misses;
        let ratio = if looked == 0 { 0.0 } else { self.cache_hits as f64 / looked as f64 };
        json!({"hits": self.cache_hits, "misses": self.cache_misses, "hitRatio": ratio})
    }

    fn json(&self) -> Value {
        json!({"h1": self.h1, "h2": self.h2})
    }

    fn http2_json(&self) -> Value {
        json!({"connections": self.h2_connections, "connectionErrors": self.h2_connection_errors,
               "streamsReset": {"byClient": self.h2_reset_by_client, "incompleteResponse": self.h2_reset_incomplete}})
    }
}

/// A worker's resource levels (gauges, not counters): what a soak or a
/// leak check watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Levels {
    /// Open client connections.
    pub open_connections: u64,
    /// Buffer sets lent to connections.
    pub buffers_in_use: u64,
    /// Buffer sets kept for reuse.
    pub buffers_pooled: u64,
    /// Idle upstream connections kept for reuse.
    pub upstream_idle: u64,
    /// Bytes held by response caches.
    pub cache_bytes: u64,
    /// Answers held by response caches.
    pub cache_entries: u64,
}

impl Levels {
    fn add(&mut self, o: &Levels) {
        self.open_connections += o.open_connections;
        self.buffers_in_use += o.buffers_in_use;
        self.buffers_pooled += o.buffers_pooled;
        self.upstream_idle += o.upstream_idle;
        self.cache_bytes += o.cache_bytes;
        self.cache_entries += o.cache_entries;
    }
}

fn pairs<'a>(all: &'a [(u16, u64)], r: &std::ops::Range<u32>) -> &'a [(u16, u64)] {
    all.get(r.start as usize..r.end as usize).unwrap_or(&[])
}

/// A histogram with percentiles, sparse (sorted bucket → count pairs):
/// most routes touch a handful of buckets, and 10,000 routes × 7 dense
/// windows would cost tens of megabytes on the control thread. A sorted
/// vector rather than a map: merging allocates only when it grows.
#[derive(Debug, Clone, Default)]
pub struct Histogram {
    counts: Vec<(u16, u64)>,
    max_us: u64,
}

impl Histogram {
    fn bump(&mut self, b: u16, n: u64) {
        match self.counts.binary_search_by_key(&b, |&(k, _)| k) {
            Ok(i) => self.counts[i].1 += n,
            Err(i) => self.counts.insert(i, (b, n)),
        }
    }

    fn add_sparse(&mut self, s: &[(u16, u64)]) {
        for &(b, n) in s {
            if n > 0 && (b as usize) < BUCKETS {
                self.bump(b, n);
                self.max_us = self.max_us.max(bucket_upper(b as usize));
            }
        }
    }

    fn add(&mut self, o: &Histogram) {
        for &(b, n) in &o.counts {
            self.bump(b, n);
        }
        self.max_us = self.max_us.max(o.max_us);
    }

    fn count(&self) -> u64 {
        self.counts.iter().map(|&(_, n)| n).sum()
    }

    /// The value at quantile `q` (upper bucket bound), µs.
    pub fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, c) in &self.counts {
            seen += *c;
            if seen >= rank {
                return bucket_upper(*i as usize).min(self.max_us.max(1));
            }
        }
        self.max_us
    }

    fn json(&self) -> Value {
        json!({"p50": self.quantile(0.5), "p90": self.quantile(0.9), "p99": self.quantile(0.99),
               "max": self.max_us, "count": self.count()})
    }
}

/// Seconds kept for request-rate windows.
const RATE_SLOTS: usize = 60;
/// Latency window: this many 10-second slices.
const LAT_SLICES: usize = 6;

/// A total plus sliding windows.
#[derive(Debug, Clone, Default)]
struct Series {
    total: Counters,
    /// (second, requests) for the last 60 s.
    per_second: Vec<(u64, u64)>,
    /// (10-second slice, histogram) for the last 60 s.
    latency: Vec<(u64, Histogram)>,
    latency_total: Histogram,
}

impl Series {
    fn merge(&mut self, c: &Counters, lat: &[(u16, u64)], now: u64) {
        self.total.add(c);
        if c.requests > 0 {
            match self.per_second.last_mut() {
                Some((s, n)) if *s == now => *n += c.requests,
                _ => self.per_second.push((now, c.requests)),
            }
            self.per_second.retain(|(s, _)| s + RATE_SLOTS as u64 > now);
        }
        if !lat.is_empty() {
            let slice = now / 10;
            match self.latency.last_mut() {
                Some((s, h)) if *s == slice => h.add_sparse(lat),
                _ => {
                    let mut h = Histogram::default();
                    h.add_sparse(lat);
                    self.latency.push((slice, h));
                }
            }
            self.latency.retain(|(s, _)| s + LAT_SLICES as u64 > slice);
            self.latency_total.add_sparse(lat);
        }
    }

    fn rate(&self, now: u64, secs: u64) -> f64 {
        let n: u64 = self.per_second.iter().filter(|(s, _)| s + secs > now && *s <= now).map(|(_, n)| n).sum();
        n as f64 / secs as f64
    }

    fn window(&self, now: u64) -> Histogram {
        let mut h = Histogram::default();
        for (s, x) in &self.latency {
            if s + LAT_SLICES as u64 > now / 10 {
                h.add(x);
            }
        }
        h
    }

    fn json(&self, now: u64) -> Value {
        let t = &self.total;
        json!({
            "requests": {
                "total": t.requests,
                "perSecond": {"1s": self.rate(now, 1), "10s": self.rate(now, 10), "60s": self.rate(now, 60)},
            },
            "latencyUs": self.window(now).json(),
            "responses": {"1xx": t.status[0], "2xx": t.status[1], "3xx": t.status[2], "4xx": t.status[3], "5xx": t.status[4]},
            "errors": {"502": t.e502, "503": t.e503, "504": t.e504, "timeouts": t.timeouts,
                       "retries": t.retries, "rejected": t.rejected},
            "bytesSent": t.bytes,
        })
    }
}

#[derive(Debug, Clone, Default)]
struct BackendAgg {
    requests: u64,
    errors: u64,
    inflight: BTreeMap<usize, u32>,
    /// Workers whose breaker for it is open.
    circuit_open: BTreeMap<usize, bool>,
    latency: Histogram,
}

/// The control thread's merged statistics.
#[derive(Debug, Default)]
pub struct StatsStore {
    global: Series,
    routes: HashMap<String, Series>,
    backends: HashMap<BackendKey, BackendAgg>,
    levels: BTreeMap<usize, Levels>,
    protocols: Protocols,
    /// One sample a second of the global totals, the last `HISTORY` seconds.
    history: std::collections::VecDeque<Sample>,
}

/// Seconds of global history kept for the dashboard's charts.
pub const HISTORY: usize = 300;

/// The global totals at one second (rates are differences of neighbours).
#[derive(Debug, Clone, Copy)]
struct Sample {
    second: u64,
    requests: u64,
    status: [u64; 5],
    /// Latency quantiles over the last 10 to 20 seconds (µs).
    p50: u64,
    p99: u64,
}

/// How a backend stands, for the stats view.
pub trait BackendState {
    /// `up`, `down` or `maintenance`.
    fn state_of(&self, key: &BackendKey) -> &'static str;
}

impl StatsStore {
    /// Merges one worker's delta at second `now`.
    pub fn merge(&mut self, worker: usize, d: &StatsDelta, now: u64) {
        let mut all = Counters::default();
        for r in &d.routes {
            let lat = pairs(&d.route_latency, &r.latency);
            // Look up before inserting: no key allocation for a known route.
            match self.routes.get_mut(&*r.key) {
                Some(series) => series.merge(&r.counters, lat, now),
                None => self.routes.entry(r.key.to_string()).or_default().merge(&r.counters, lat, now),
            }
            all.add(&r.counters);
        }
        all.add(&d.unrouted);
        self.global.merge(&all, &d.route_latency, now);
        for b in &d.backends {
            let agg = match self.backends.get_mut(&b.key) {
                Some(a) => a,
                None => self.backends.entry(b.key.clone()).or_default(),
            };
            agg.requests += b.requests;
            agg.errors += b.errors;
            agg.inflight.insert(worker, b.inflight);
            agg.circuit_open.insert(worker, b.circuit_open);
            agg.latency.add_sparse(pairs(&d.backend_latency, &b.latency));
        }
        self.levels.insert(worker, d.levels);
        self.protocols.add(&d.protocols);
    }

    /// Records the global totals at second `now` (called once a second).
    pub fn sample(&mut self, now: u64) {
        let g = &self.global;
        // The current 10-second slice and the one before it: a new slice
        // is empty until the workers' next deltas arrive.
        let mut recent = Histogram::default();
        for (_, h) in g.latency.iter().filter(|(s, _)| s + 1 >= now / 10) {
            recent.add(h);
        }
        let q = |x: f64| recent.quantile(x);
        let s = Sample { second: now, requests: g.total.requests, status: g.total.status, p50: q(0.5), p99: q(0.99) };
        if self.history.back().is_some_and(|b| b.second == now) {
            self.history.pop_back();
        }
        self.history.push_back(s);
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    /// `GET /api/v1/history`: the samples, oldest first, as columns.
    pub fn history_json(&self) -> Value {
        let col = |f: &dyn Fn(&Sample) -> u64| Value::Array(self.history.iter().map(|s| json!(f(s))).collect());
        json!({
            "second": col(&|s| s.second),
            "requests": col(&|s| s.requests),
            "1xx": col(&|s| s.status[0]), "2xx": col(&|s| s.status[1]), "3xx": col(&|s| s.status[2]),
            "4xx": col(&|s| s.status[3]), "5xx": col(&|s| s.status[4]),
            "p50Us": col(&|s| s.p50), "p99Us": col(&|s| s.p99),
        })
    }

    /// Every worker's levels, summed.
    pub fn levels_total(&self) -> Levels {
        let mut t = Levels::default();
        for l in self.levels.values() {
            t.add(l);
        }
        t
    }

    /// Forgets routes and backends no longer configured.
    pub fn retain(&mut self, routes: &[String], backends: &[BackendKey]) {
        // Sets: with 10,000 routes a scan per entry would be 10^8 compares.
        let routes: std::collections::HashSet<&String> = routes.iter().collect();
        let backends: std::collections::HashSet<&BackendKey> = backends.iter().collect();
        self.routes.retain(|k, _| routes.contains(k));
        self.backends.retain(|k, _| backends.contains(k));
    }

    /// Requests in flight to `keys` on each worker (as last reported).
    pub fn inflight_by_worker<'a>(&self, keys: impl Iterator<Item = &'a BackendKey>) -> BTreeMap<usize, u32> {
        let mut out = BTreeMap::new();
        for agg in keys.filter_map(|k| self.backends.get(k)) {
            for (w, n) in &agg.inflight {
                *out.entry(*w).or_insert(0) += n;
            }
        }
        out
    }

    /// Workers whose circuit breaker for `key` is open (as last reported).
    pub fn circuit_open_workers(&self, key: &BackendKey) -> usize {
        self.backends.get(key).map_or(0, |a| a.circuit_open.values().filter(|o| **o).count())
    }

    fn backend_json(&self, keys: &[BackendKey], states: &dyn BackendState) -> Value {
        Value::Array(
            keys.iter()
                .map(|k| {
                    let a = self.backends.get(k).cloned().unwrap_or_default();
                    let open = a.circuit_open.values().filter(|o| **o).count();
                    json!({"route": &*k.route, "id": &*k.backend, "state": states.state_of(k),
                           "circuit": if open > 0 { "open" } else { "closed" }, "circuitOpenWorkers": open,
                           "inFlight": a.inflight.values().sum::<u32>(), "requests": a.requests,
                           "errors": a.errors, "latencyUs": a.latency.json()})
                })
                .collect(),
        )
    }

    /// `GET /stats`: everything; `backends` lists every configured backend.
    pub fn json(&self, now: u64, backends: &[BackendKey], states: &dyn BackendState) -> Value {
        let mut v = self.global.json(now);
        let l = self.levels_total();
        v["openConnections"] = json!(l.open_connections);
        v["buffers"] = json!({"inUse": l.buffers_in_use, "pooled": l.buffers_pooled});
        v["upstreamIdleConnections"] = json!(l.upstream_idle);
        v["protocols"] = self.protocols.json();
        v["http2"] = self.protocols.http2_json();
        v["cache"] = self.protocols.cache_json();
        v["cache"]["bytes"] = json!(l.cache_bytes);
        v["cache"]["entries"] = json!(l.cache_entries);
        let routes: serde_json::Map<String, Value> =
            self.routes.iter().map(|(k, s)| (k.clone(), s.json(now)["requests"]["total"].clone())).collect();
        v["routes"] = Value::Object(routes);
        v["backends"] = self.backend_json(backends, states);
        v
    }

    /// `GET /stats/:vHost`; `None` if the route has no stats entry and is not configured.
    pub fn route_json(&self, key: &str, now: u64, backends: &[BackendKey], states: &dyn BackendState) -> Value {
        let mut v = self.routes.get(key).cloned().unwrap_or_default().json(now);
        let mine: Vec<BackendKey> = backends.iter().filter(|b| &*b.route == key).cloned().collect();
        v["backends"] = self.backend_json(&mine, states);
        v
    }

    /// Prometheus text exposition.
    pub fn prometheus(&self, backends: &[BackendKey], states: &dyn BackendState) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let _ = writeln!(out, "# HELP ringway_requests_total Requests answered, by route and status class.");
        let _ = writeln!(out, "# TYPE ringway_requests_total counter");
        let mut keys: Vec<&String> = self.routes.keys().collect();
        keys.sort();
        for k in &keys {
            let s = &self.routes[*k];
            for (i, class) in ["1xx", "2xx", "3xx", "4xx", "5xx"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "ringway_requests_total{{route=\"{}\",class=\"{class}\"}} {}",
                    esc(k),
                    s.total.status[i]
                );
            }
        }
        let _ = writeln!(out, "# HELP ringway_errors_total Proxy errors, by route and kind.");
        let _ = writeln!(out, "# TYPE ringway_errors_total counter");
        for k in &keys {
            let t = &self.routes[*k].total;
            for (kind, n) in [
                ("502", t.e502),
                ("503", t.e503),
                ("504", t.e504),
                ("timeout", t.timeouts),
                ("retry", t.retries),
                ("rejected", t.rejected),
            ] {
                let _ = writeln!(out, "ringway_errors_total{{route=\"{}\",kind=\"{kind}\"}} {n}", esc(k));
            }
        }
        let _ = writeln!(out, "# HELP ringway_request_duration_seconds Time to the response head, by route.");
        let _ = writeln!(out, "# TYPE ringway_request_duration_seconds histogram");
        for k in &keys {
            let h = &self.routes[*k].latency_total;
            let mut cum = 0;
            for (i, c) in &h.counts {
                cum += c;
                if *c > 0 {
                    let le = (bucket_upper(*i as usize) + 1) as f64 / 1e6;
                    let _ = writeln!(
                        out,
                        "ringway_request_duration_seconds_bucket{{route=\"{}\",le=\"{le}\"}} {cum}",
                        esc(k)
                    );
                }
            }
            let _ = writeln!(out, "ringway_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {cum}", esc(k));
            let sum = self.routes[*k].total.latency_sum_us as f64 / 1e6;
            let _ = writeln!(out, "ringway_request_duration_seconds_sum{{route=\"{}\"}} {sum}", esc(k));
            let _ = writeln!(out, "ringway_request_duration_seconds_count{{route=\"{}\"}} {cum}", esc(k));
        }
        let labels = |k: &BackendKey| format!("route=\"{}\",backend=\"{}\"", esc(&k.route), esc(&k.backend));
        let zero = BackendAgg::default();
        let agg = |k: &BackendKey| self.backends.get(k).unwrap_or(&zero);
        let _ = writeln!(out, "# HELP ringway_backend_requests_total Requests sent to a backend.");
        let _ = writeln!(out, "# TYPE ringway_backend_requests_total counter");
        for k in backends {
            let _ = writeln!(out, "ringway_backend_requests_total{{{}}} {}", labels(k), agg(k).requests);
        }
        let _ = writeln!(out, "# HELP ringway_backend_errors_total Failed attempts on a backend.");
        let _ = writeln!(out, "# TYPE ringway_backend_errors_total counter");
        for k in backends {
            let _ = writeln!(out, "ringway_backend_errors_total{{{}}} {}", labels(k), agg(k).errors);
        }
        let _ = writeln!(out, "# HELP ringway_backend_up 1 when the backend takes traffic.");
        let _ = writeln!(out, "# TYPE ringway_backend_up gauge");
        for k in backends {
            let _ = writeln!(out, "ringway_backend_up{{{}}} {}", labels(k), u8::from(states.state_of(k) == "up"));
        }
        let _ =
            writeln!(out, "# HELP ringway_backend_circuit_open Workers whose circuit breaker for the backend is open.");
        let _ = writeln!(out, "# TYPE ringway_backend_circuit_open gauge");
        for k in backends {
            let open = agg(k).circuit_open.values().filter(|o| **o).count();
            let _ = writeln!(out, "ringway_backend_circuit_open{{{}}} {open}", labels(k));
        }
        let _ = writeln!(out, "# HELP ringway_open_connections Open client connections.");
        let _ = writeln!(out, "# TYPE ringway_open_connections gauge");
        let l = self.levels_total();
        let _ = writeln!(out, "ringway_open_connections {}", l.open_connections);
        let _ = writeln!(out, "# HELP ringway_buffers_in_use Buffer sets lent to connections.");
        let _ = writeln!(out, "# TYPE ringway_buffers_in_use gauge");
        let _ = writeln!(out, "ringway_buffers_in_use {}", l.buffers_in_use);
        let _ = writeln!(out, "# HELP ringway_buffers_pooled Buffer sets kept for reuse.");
        let _ = writeln!(out, "# TYPE ringway_buffers_pooled gauge");
        let _ = writeln!(out, "ringway_buffers_pooled {}", l.buffers_pooled);
        let _ = writeln!(out, "# HELP ringway_upstream_idle_connections Idle upstream connections kept for reuse.");
        let _ = writeln!(out, "# TYPE ringway_upstream_idle_connections gauge");
        let _ = writeln!(out, "ringway_upstream_idle_connections {}", l.upstream_idle);
        let p = &self.protocols;
        let _ = writeln!(out, "# HELP ringway_requests_by_protocol_total Requests by the protocol the client spoke.");
        let _ = writeln!(out, "# TYPE ringway_requests_by_protocol_total counter");
        let _ = writeln!(out, "ringway_requests_by_protocol_total{{protocol=\"h1\"}} {}", p.h1);
        let _ = writeln!(out, "ringway_requests_by_protocol_total{{protocol=\"h2\"}} {}", p.h2);
        let _ = writeln!(out, "# HELP ringway_h2_connections_total HTTP/2 connections accepted.");
        let _ = writeln!(out, "# TYPE ringway_h2_connections_total counter");
        let _ = writeln!(out, "ringway_h2_connections_total {}", p.h2_connections);
        let _ = writeln!(
            out,
            "# HELP ringway_h2_connection_errors_total HTTP/2 connections closed on a protocol error or flood."
        );
        let _ = writeln!(out, "# TYPE ringway_h2_connection_errors_total counter");
        let _ = writeln!(out, "ringway_h2_connection_errors_total {}", p.h2_connection_errors);
        let _ = writeln!(out, "# HELP ringway_h2_streams_reset_total HTTP/2 streams reset, by reason.");
        let _ = writeln!(out, "# TYPE ringway_h2_streams_reset_total counter");
        let _ = writeln!(out, "ringway_h2_streams_reset_total{{reason=\"client\"}} {}", p.h2_reset_by_client);
        let _ =
            writeln!(out, "ringway_h2_streams_reset_total{{reason=\"incomplete_response\"}} {}", p.h2_reset_incomplete);
        let _ = writeln!(out, "# HELP ringway_cache_hits_total Answers served from a response cache.");
        let _ = writeln!(out, "# TYPE ringway_cache_hits_total counter");
        let _ = writeln!(out, "ringway_cache_hits_total {}", p.cache_hits);
        let _ = writeln!(out, "# HELP ringway_cache_misses_total Cacheable requests not found in the cache.");
        let _ = writeln!(out, "# TYPE ringway_cache_misses_total counter");
        let _ = writeln!(out, "ringway_cache_misses_total {}", p.cache_misses);
        let _ = writeln!(out, "# HELP ringway_cache_bytes Bytes held by response caches (all workers).");
        let _ = writeln!(out, "# TYPE ringway_cache_bytes gauge");
        let _ = writeln!(out, "ringway_cache_bytes {}", l.cache_bytes);
        let _ = writeln!(out, "# HELP ringway_cache_entries Answers held by response caches (all workers).");
        let _ = writeln!(out, "# TYPE ringway_cache_entries gauge");
        let _ = writeln!(out, "ringway_cache_entries {}", l.cache_entries);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for us in [0u64, 1, 15, 16, 17, 20, 31, 32, 100, 1000, 12345, 1_000_000, 60_000_000] {
            let b = bucket_of(us);
            assert!(b >= last, "{us}");
            last = b;
            assert!(bucket_upper(b) >= us, "{us} within its bucket");
            assert!(bucket_upper(b) as f64 <= (us as f64) * 1.26 + 1.0, "{us}: {}", bucket_upper(b));
        }
    }

    struct AllUp;
    impl BackendState for AllUp {
        fn state_of(&self, _: &BackendKey) -> &'static str {
            "up"
        }
    }

    #[test]
    fn merged_totals_are_exact_and_windows_slide() {
        let mut s = StatsStore::default();
        let key: Arc<str> = Arc::from("a.com");
        let delta = |n: u64| StatsDelta {
            routes: vec![RouteDelta {
                key: key.clone(),
                counters: Counters { requests: n, status: [0, n, 0, 0, 0], ..Default::default() },
                latency: 0..1,
            }],
            route_latency: vec![(bucket_of(1000) as u16, n)],
            ..Default::default()
        };
        let mut early = StatsStore::default();
        early.merge(0, &delta(2), 0);
        assert_eq!(early.json(0, &[], &AllUp)["latencyUs"]["count"], 2);
        s.merge(0, &delta(10), 100);
        s.merge(1, &delta(5), 100);
        s.merge(0, &delta(3), 130);
        let v = s.json(130, &[], &AllUp);
        assert_eq!(v["requests"]["total"], 18);
        assert_eq!(v["responses"]["2xx"], 18);
        assert_eq!(v["requests"]["perSecond"]["60s"], 18.0 / 60.0);
        assert_eq!(v["requests"]["perSecond"]["1s"], 3.0);
        let p50 = v["latencyUs"]["p50"].as_u64().unwrap_or(0);
        assert!((1000..=1300).contains(&p50), "{p50}");
        // Two minutes later the windows are empty, the totals are not.
        let v = s.json(260, &[], &AllUp);
        assert_eq!(v["requests"]["total"], 18);
        assert_eq!(v["requests"]["perSecond"]["60s"], 0.0);
        assert!(s.prometheus(&[], &AllUp).contains("ringway_requests_total{route=\"a.com\",class=\"2xx\"} 18"));
    }
}
