//! `DELETE /api/v1/cache/:vHost[?path=/x | /x*]`: drops response-cache
//! entries of a route on every worker (each keeps its own cache) and
//! answers how many went.

use std::time::{Duration, Instant};

use control::messages::{ControlMsg, WorkerEvent};
use control::model::VHost;
use serde_json::json;

use super::admin::AdminReply;
use super::Controller;

fn error(status: u16, error: &str, field: Option<&str>, message: String) -> AdminReply {
    AdminReply::json(status, &json!({"error": error, "field": field, "message": message}))
}

impl Controller {
    /// Answers a call under `/api/v1/cache/`.
    pub(super) fn purge_reply(&mut self, method: &str, path: &str, query: &str) -> AdminReply {
        if method != "DELETE" {
            return AdminReply::not_allowed("DELETE");
        }
        let v = path.trim_start_matches("/api/v1/cache/").trim_matches('/');
        let Some(key) = VHost::parse(v).map(|h| h.key()).filter(|k| self.state.route(k).is_some()) else {
            return error(404, "notFound", None, format!("no route {v:?}"));
        };
        let cached = self.state.route(&key).is_some_and(|r| {
            r.policies.cache.is_some() || r.paths.iter().any(|p| p.overrides.policies.cache.is_some())
        });
        if !cached {
            return error(404, "notFound", None, format!("route {v:?} has no cache"));
        }
        let raw = query.split('&').find_map(|kv| kv.strip_prefix("path="));
        let target = match raw.map(control::api::percent_decode) {
            None => None,
            Some(Some(p)) if p.starts_with('/') => Some(p),
            Some(_) => {
                let msg = "path must start with / (a path with its query, or a prefix ending in *)";
                return error(400, "invalidField", Some("path"), msg.into());
            }
        };
        self.flush_id += 1;
        let id = self.flush_id;
        self.broadcast(ControlMsg::PurgeCache { id, route: key, path: target.clone() });
        let (mut answered, mut entries) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(1);
        while answered < self.workers.len() {
            match self.events.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(WorkerEvent::Purged { id: got, entries: n, .. }) if got == id => {
                    answered += 1;
                    entries += n;
                }
                Ok(WorkerEvent::Purged { .. }) => {}
                Ok(other) => self.on_event(other),
                Err(_) => break,
            }
        }
        tracing::info!(route = v, path = ?target, entries, "cache purged");
        AdminReply::json(200, &json!({"purged": entries, "workers": answered, "path": target}))
    }
}
