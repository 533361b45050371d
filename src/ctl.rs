//! `ringway ctl`: a small client for the admin API with readable tables,
//! for operators who would rather not write curl lines.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::{json, Value};

/// Usage text.
pub const HELP: &str = "USAGE: ringway ctl [--admin ADDR] [--token TOKEN] [--dry-run] COMMAND

ADDR defaults to $RINGWAY_ADMIN or 127.0.0.1:9901; TOKEN to $RINGWAY_TOKEN.
--dry-run: a write changes nothing and prints its impact (routes added,
removed or changed; for IP_HASH pools the share of clients that move).

COMMANDS:
    routes                              list routes and their backends
    route VHOST                         one route as JSON
    add-route FILE|-                    create a route from RouteConfig JSON
    delete-route VHOST
    add-backend VHOST HOST:PORT [WEIGHT [ID]]
    delete-backend VHOST ID
    maintenance VHOST ID on|off         take a backend out (on) or back (off)
    stats [VHOST]                       requests, rates, latency, backends
    explain URL [CLIENT-IP]             which route, rule and backends a request would meet
    health
    cluster                             cluster mode: this node's link to etcd and every node's
                                        applied revision and last heartbeat
    upgrade                             start the binary at ringway's path on the same sockets,
                                        then drain this process (as SIGUSR2 does)
";

struct Client {
    admin: String,
    token: Option<String>,
    /// `--dry-run`: writes go as `?dryRun=true`; their impact, as text.
    dry_run: Option<std::cell::RefCell<Option<String>>>,
}

struct Reply {
    status: u16,
    body: Value,
}

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Reply, String> {
        let Some(impact) = self.dry_run.as_ref().filter(|_| method != "GET") else {
            return self.send(method, path, body);
        };
        let sep = if path.contains('?') { '&' } else { '?' };
        let r = self.send(method, &format!("{path}{sep}dryRun=true"), body)?;
        if r.status == 200 {
            *impact.borrow_mut() = Some(impact_table(&r.body));
        }
        Ok(r)
    }

    fn send(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Reply, String> {
        let mut s = TcpStream::connect(&self.admin).map_err(|e| format!("cannot reach {}: {e}", self.admin))?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n", self.admin);
        if let Some(t) = &self.token {
            req.push_str(&format!("Authorization: Bearer {t}\r\n"));
        }
        if body.is_some() {
            req.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", payload.len()));
        }
        req.push_str("\r\n");
        req.push_str(&payload);
        s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").ok_or("malformed response")?;
        let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or("malformed status line")?;
        let body = if body.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_string()))
        };
        Ok(Reply { status, body })
    }
}

fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(i, s)| format!("{s:<w$}", w = widths[i])).collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A backend's breaker as the table shows it: `closed`, or `open` with how
/// many workers have it open.
fn circuit(be: &Value) -> String {
    match (be["circuit"].as_str(), be["circuitOpenWorkers"].as_u64()) {
        (Some("open"), Some(n)) => format!("open ({n}w)"),
        (Some(c), _) => c.to_string(),
        _ => "-".into(),
    }
}

/// A dry run's impact as a table.
fn impact_table(v: &Value) -> String {
    let mut rows = vec![vec![
        "VHOST".into(),
        "CHANGE".into(),
        "BACKENDS ADDED".into(),
        "BACKENDS REMOVED".into(),
        "CLIENTS MOVED".into(),
    ]];
    let list = |x: &Value| x.as_array().map(|a| a.iter().map(s).collect::<Vec<_>>().join(" ")).unwrap_or_default();
    for r in v["impact"]["routes"].as_array().into_iter().flatten() {
        let moved = r["movedPercent"].as_f64().map_or("-".to_string(), |m| format!("{m:.1} %"));
        rows.push(vec![s(&r["vHost"]), s(&r["change"]), list(&r["backendsAdded"]), list(&r["backendsRemoved"]), moved]);
    }
    format!("dry run: nothing changed\n{}", table(&rows))
}

/// A query value, percent-encoded (all but unreserved characters and `/`).
fn query_enc(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'/' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An explain answer as text: the route, the rule, the backends.
fn explained(v: &Value) -> String {
    if v["route"].is_null() {
        return format!("no route: {}\n", s(&v["message"]));
    }
    let r = &v["route"];
    let mut out = format!("route     {} ({} match, id {})\n", s(&r["vHost"]), s(&r["match"]), s(&r["id"]));
    if let Some(p) = v["pathRule"].as_object() {
        let strip = if p.get("stripPrefix").and_then(Value::as_bool) == Some(true) { ", stripped" } else { "" };
        out.push_str(&format!("rule      {}{strip}\n", p.get("prefix").map(s).unwrap_or_default()));
    }
    out.push_str(&format!("forwards  {}\n", s(&v["forwardedPath"])));
    let next = if v["next"].is_null() { format!("- ({})", s(&v["nextNote"])) } else { s(&v["next"]) };
    out.push_str(&format!("strategy  {}   next: {next}\n\n", s(&v["strategy"])));
    let mut rows = vec![vec!["BACKEND".into(), "ADDRESS".into(), "ELIGIBLE".into(), "REASON".into()]];
    for b in v["backends"].as_array().into_iter().flatten() {
        rows.push(vec![s(&b["id"]), s(&b["address"]), s(&b["eligible"]), s(&b["reason"])]);
    }
    out.push_str(&table(&rows));
    out
}

fn enc(segment: &str) -> String {
    segment.bytes().map(|b| if b == b'*' { "%2A".to_string() } else { (b as char).to_string() }).collect()
}

fn show_error(r: &Reply) -> String {
    let field = r.body.get("field").and_then(Value::as_str).map(|f| format!(" ({f})")).unwrap_or_default();
    let msg = r.body.get("message").map(s).unwrap_or_else(|| s(&r.body));
    format!("HTTP {}{field}: {msg}", r.status)
}

/// Runs `ringway ctl ARGS`; returns the text to print or an error.
pub fn run(args: &[String]) -> Result<String, String> {
    let mut admin = std::env::var("RINGWAY_ADMIN").unwrap_or_else(|_| "127.0.0.1:9901".into());
    let mut token = std::env::var("RINGWAY_TOKEN").ok();
    let mut rest = Vec::new();
    let mut dry_run = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--admin" => admin = it.next().cloned().ok_or("--admin needs a value")?,
            "--token" => token = Some(it.next().cloned().ok_or("--token needs a value")?),
            "--dry-run" => dry_run = Some(Default::default()),
            "--help" | "-h" => return Ok(HELP.to_string()),
            _ => rest.push(a.as_str()),
        }
    }
    let c = Client { admin, token, dry_run };
    let out = command(&c, &rest);
    // A dry run's answer is its impact, whatever the command prints.
    match c.dry_run.and_then(|d| d.into_inner()) {
        Some(impact) => Ok(impact),
        None => out,
    }
}

fn command(c: &Client, rest: &[&str]) -> Result<String, String> {
    let ok = |r: Reply, want: &[u16]| if want.contains(&r.status) { Ok(r) } else { Err(show_error(&r)) };
    match rest {
        ["routes"] => {
            let r = ok(c.call("GET", "/api/v1/routes", None)?, &[200])?;
            let mut rows = vec![vec!["VHOST".into(), "ID".into(), "STRATEGY".into(), "BACKENDS".into()]];
            for route in r.body.as_array().into_iter().flatten() {
                let backends: Vec<String> = route["backends"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|b| format!("{}={}:{}", s(&b["id"]), s(&b["hostname"]), s(&b["port"])))
                    .collect();
                rows.push(vec![s(&route["vHost"]), s(&route["id"]), s(&route["strategy"]), backends.join(" ")]);
            }
            Ok(table(&rows))
        }
        ["route", v] => {
            let r = ok(c.call("GET", &format!("/api/v1/routes/{}", enc(v)), None)?, &[200])?;
            serde_json::to_string_pretty(&r.body).map_err(|e| e.to_string())
        }
        ["add-route", file] => {
            let text = if *file == "-" {
                let mut t = String::new();
                std::io::stdin().read_to_string(&mut t).map_err(|e| e.to_string())?;
                t
            } else {
                std::fs::read_to_string(file).map_err(|e| format!("{file}: {e}"))?
            };
            let body: Value = serde_json::from_str(&text).map_err(|e| format!("{file}: {e}"))?;
            let r = ok(c.call("POST", "/api/v1/routes", Some(&body))?, &[201])?;
            Ok(format!("created route {}\n", s(&r.body["vHost"])))
        }
        ["delete-route", v] => {
            ok(c.call("DELETE", &format!("/api/v1/routes/{}", enc(v)), None)?, &[204])?;
            Ok(format!("deleted route {v}\n"))
        }
        ["add-backend", v, hostport, extra @ ..] => {
            let (host, port) = hostport.rsplit_once(':').ok_or("HOST:PORT expected")?;
            let port: u64 = port.parse().map_err(|_| format!("bad port in {hostport}"))?;
            let mut body = json!({"hostname": host, "port": port});
            if let Some(w) = extra.first() {
                body["weight"] = json!(w.parse::<u64>().map_err(|_| format!("bad weight {w}"))?);
            }
            if let Some(id) = extra.get(1) {
                body["id"] = json!(id);
            }
            let r = ok(c.call("POST", &format!("/api/v1/routes/{}/backends", enc(v)), Some(&body))?, &[201])?;
            Ok(format!("added backend {} to {v}\n", s(&r.body["id"])))
        }
        ["delete-backend", v, id] => {
            ok(c.call("DELETE", &format!("/api/v1/routes/{}/backends/{id}", enc(v)), None)?, &[204])?;
            Ok(format!("deleted backend {id} from {v}\n"))
        }
        ["maintenance", v, id, onoff @ ("on" | "off")] => {
            let method = if *onoff == "on" { "POST" } else { "DELETE" };
            ok(c.call(method, &format!("/api/v1/routes/{}/backends/{id}/dead", enc(v)), None)?, &[200])?;
            Ok(format!("backend {id} of {v}: maintenance {onoff}\n"))
        }
        ["stats", tail @ ..] => {
            let path = match tail.first() {
                Some(v) => format!("/api/v1/stats/{}", enc(v)),
                None => "/api/v1/stats".into(),
            };
            let r = ok(c.call("GET", &path, None)?, &[200])?;
            let b = &r.body;
            let mut out = table(&[
                vec![
                    "REQUESTS".into(),
                    "RPS 1s".into(),
                    "RPS 10s".into(),
                    "RPS 60s".into(),
                    "P50 µs".into(),
                    "P99 µs".into(),
                    "MAX µs".into(),
                    "5XX".into(),
                    "OPEN".into(),
                ],
                vec![
                    s(&b["requests"]["total"]),
                    s(&b["requests"]["perSecond"]["1s"]),
                    s(&b["requests"]["perSecond"]["10s"]),
                    s(&b["requests"]["perSecond"]["60s"]),
                    s(&b["latencyUs"]["p50"]),
                    s(&b["latencyUs"]["p99"]),
                    s(&b["latencyUs"]["max"]),
                    s(&b["responses"]["5xx"]),
                    s(&b["openConnections"]),
                ],
            ]);
            let mut rows = vec![vec![
                "ROUTE".into(),
                "BACKEND".into(),
                "STATE".into(),
                "CIRCUIT".into(),
                "IN FLIGHT".into(),
                "REQUESTS".into(),
                "ERRORS".into(),
                "P50 µs".into(),
                "P99 µs".into(),
            ]];
            for be in b["backends"].as_array().into_iter().flatten() {
                rows.push(vec![
                    s(&be["route"]),
                    s(&be["id"]),
                    s(&be["state"]),
                    circuit(be),
                    s(&be["inFlight"]),
                    s(&be["requests"]),
                    s(&be["errors"]),
                    s(&be["latencyUs"]["p50"]),
                    s(&be["latencyUs"]["p99"]),
                ]);
            }
            out.push('\n');
            out.push_str(&table(&rows));
            Ok(out)
        }
        ["explain", url, client @ ..] if client.len() <= 1 => {
            let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).unwrap_or(url);
            let (host, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
            let mut q = format!("/api/v1/explain?host={}&path={}", query_enc(host), query_enc(path));
            if let Some(c) = client.first() {
                q.push_str(&format!("&client={}", query_enc(c)));
            }
            let r = ok(c.call("GET", &q, None)?, &[200])?;
            Ok(explained(&r.body))
        }
        ["upgrade"] => {
            let r = ok(c.call("POST", "/api/v1/upgrade", None)?, &[202])?;
            Ok(format!(
                "upgrade started in pid {}: the new process takes over once ready (the log says how it went)\n",
                s(&r.body["pid"])
            ))
        }
        ["cluster"] => {
            let r = ok(c.call("GET", "/api/v1/cluster", None)?, &[200])?;
            Ok(cluster_table(&r.body))
        }
        ["health"] => {
            let r = c.call("GET", "/health", None)?;
            Ok(format!("{} ({} of {} backends up)\n", s(&r.body["status"]), s(&r.body["healthy"]), s(&r.body["total"])))
        }
        _ => Err(format!("unknown or incomplete ctl command\n\n{HELP}")),
    }
}

/// `ctl cluster`: the link, then one row per node.
fn cluster_table(b: &Value) -> String {
    let link =
        if b["connected"] == true { "connected".to_string() } else { format!("DISCONNECTED: {}", s(&b["lastError"])) };
    let mut out = format!(
        "node {} · etcd {} prefix {} · {link} · revision {}\n\n",
        s(&b["nodeId"]),
        b["etcd"]["endpoints"].as_array().map_or("-".into(), |e| e.iter().map(s).collect::<Vec<_>>().join(",")),
        s(&b["etcd"]["prefix"]),
        s(&b["revision"]),
    );
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut rows = vec![vec!["NODE".into(), "REVISION".into(), "HEARTBEAT".into(), "VERSION".into(), "PID".into()]];
    for n in b["nodes"].as_array().into_iter().flatten() {
        let me = if n["self"] == true { " (this)" } else { "" };
        let ago = n["heartbeatAt"].as_u64().map_or("-".into(), |t| format!("{} s ago", now.saturating_sub(t)));
        rows.push(vec![format!("{}{me}", s(&n["nodeId"])), s(&n["revision"]), ago, s(&n["version"]), s(&n["pid"])]);
    }
    out.push_str(&table(&rows));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&[vec!["A".into(), "BB".into()], vec!["ccc".into(), "d".into()]]);
        assert_eq!(t, "A    BB\nccc  d\n");
    }
}
