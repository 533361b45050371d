//! Automatic certificates (ACME, RFC 8555, HTTP-01) for `autoHttps` routes
//! that have no certificate of their own.
//!
//! The client (instant-acme, a maintained RFC 8555 implementation) runs on
//! a helper thread of its own with a small tokio runtime: its HTTP client
//! needs one, and issuance waits on a remote CA for seconds, so it must
//! never touch a worker or the control thread. The control thread decides
//! what is due (no certificate, or two thirds of its lifetime gone, and no
//! backoff pending), hands the helper the domains, publishes each HTTP-01
//! token to every worker before the CA is told to look, and stores what
//! comes back through the same certificate path as the API (state file,
//! change log, snapshot to every worker).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use control::model::Acme;
use control::state::{Certificate, State};
use crossbeam_channel::Sender;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use serde_json::json;

/// Issuances running at once.
const MAX_CONCURRENT: usize = 4;
/// The first wait after a failure; doubled each time, up to `MAX_BACKOFF`.
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
/// The longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// How long the CA may take to validate and to issue.
const ORDER_TIMEOUT: Duration = Duration::from_secs(90);

/// The control thread → the ACME helper.
#[derive(Debug)]
pub(super) enum AcmeCmd {
    /// Issue (or renew) certificates for these domains now.
    Issue(Vec<String>),
}

/// The ACME helper → the control thread.
#[derive(Debug)]
pub(super) enum AcmeEvent {
    /// Publish this HTTP-01 answer to every worker, then send on `ready`.
    Challenge {
        /// The token (the last path segment the CA asks for).
        token: String,
        /// What to answer.
        key_authorization: String,
        /// Told once every worker serves it (`false`: not every one answered).
        ready: tokio::sync::oneshot::Sender<bool>,
    },
    /// The token is no longer needed.
    ChallengeDone {
        /// The token.
        token: String,
    },
    /// A certificate for `domain`.
    Issued {
        /// The domain.
        domain: String,
        /// Chain, PEM, leaf first.
        cert_pem: String,
        /// Private key, PEM.
        key_pem: String,
    },
    /// An attempt for `domain` failed.
    Failed {
        /// The domain.
        domain: String,
        /// Why.
        error: String,
    },
}

/// Where ACME stands for one domain (the control thread's view).
#[derive(Debug, Clone, Default)]
pub(super) struct DomainStatus {
    /// An attempt is running.
    pub(super) in_flight: bool,
    /// Failures since the last success.
    pub(super) failures: u32,
    /// The last failure's reason.
    pub(super) last_error: Option<String>,
    /// No new attempt before this.
    pub(super) retry_at: Option<Instant>,
    /// Certificates issued for it since start.
    pub(super) issued: u64,
}

/// What the control thread keeps for ACME.
pub(super) struct AcmeSide {
    /// Commands to the helper.
    pub(super) tx: tokio::sync::mpsc::UnboundedSender<AcmeCmd>,
    /// Each managed domain's status.
    pub(super) status: BTreeMap<String, DomainStatus>,
    /// HTTP-01 answers every worker serves: (token, key authorization).
    pub(super) tokens: Vec<(String, String)>,
    /// Issued certificates waiting for the pending change to finish.
    pub(super) queue: std::collections::VecDeque<(String, Certificate)>,
    /// When the control thread next looks for due domains.
    pub(super) next_check: Instant,
}

/// The wait after `failures` failures in a row.
pub(super) fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    FIRST_BACKOFF.saturating_mul(1u32 << exp).min(MAX_BACKOFF)
}

/// When an ACME certificate is due for renewal: two thirds into its
/// lifetime (Let's Encrypt's 90 days → after 60), or 30 days before expiry
/// when the start is unknown.
pub(super) fn renew_at(c: &Certificate) -> i64 {
    if c.not_before > 0 && c.not_after > c.not_before {
        c.not_before + (c.not_after - c.not_before) * 2 / 3
    } else {
        c.not_after - 30 * 86_400
    }
}

/// The domains ACME manages: `autoHttps` routes with an exact host name
/// (HTTP-01 cannot prove a wildcard or an address) and no certificate of
/// their own, from the route, the config file or the API.
pub(super) fn managed_domains(state: &State, static_names: &[String]) -> Vec<String> {
    let operator_covers = |host: &str| {
        let named = |n: &String| control::model::name_covers(n, host);
        static_names.iter().any(named)
            || state.certificates.iter().any(|(d, c)| !c.acme && (named(d) || c.sans.iter().any(named)))
    };
    state
        .routes
        .iter()
        .filter(|r| r.auto_https && r.ssl.is_none() && r.vhost.acme_can_issue())
        .map(|r| r.key.clone())
        .filter(|h| !operator_covers(h))
        .collect()
}

/// Whether `domain` needs a (new) certificate at Unix time `now`.
pub(super) fn due(state: &State, domain: &str, now: i64) -> bool {
    match state.certificates.get(domain) {
        Some(c) if c.acme => now >= renew_at(c),
        Some(_) => false,
        None => true,
    }
}

/// The status object the certificates list and the dashboard show.
impl DomainStatus {
    /// Where the domain stands, given its ACME certificate if any.
    fn phase(&self, cert: Option<&Certificate>) -> &'static str {
        match (self.in_flight, cert, self.last_error.is_some()) {
            (true, Some(_), _) => "renewing",
            (true, None, _) => "issuing",
            (false, _, true) => "failed",
            (false, Some(_), false) => "valid",
            (false, None, false) => "pending",
        }
    }
}

/// The domain's ACME certificate in `state`, if it has one.
fn acme_cert<'a>(state: &'a State, domain: &str) -> Option<&'a Certificate> {
    state.certificates.get(domain).filter(|c| c.acme)
}

/// The status object the certificates list and the dashboard show.
pub(super) fn status_json(domain: &str, s: &DomainStatus, state: &State, now: Instant) -> serde_json::Value {
    let cert = acme_cert(state, domain);
    let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    json!({
        "state": s.phase(cert),
        "failures": s.failures,
        "lastError": s.last_error,
        "nextAttemptAt": s.retry_at.map(|t| unix + t.saturating_duration_since(now).as_secs() as i64),
        "renewAt": cert.map(renew_at),
        "issued": s.issued,
    })
}

/// The helper's settings.
struct Settings {
    /// The `acme` config.
    pub(super) acme: Acme,
    /// Where the account's credentials are kept (0600), if anywhere.
    pub(super) account_file: Option<PathBuf>,
}

/// Starts the helper thread: the control thread's side of it, and where its
/// events arrive. The account file lives beside the state file.
pub(super) fn start(
    config: Acme,
    state_file: Option<&std::path::Path>,
) -> std::io::Result<(AcmeSide, crossbeam_channel::Receiver<AcmeEvent>)> {
    let (events_tx, events_rx) = crossbeam_channel::unbounded();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let account_file = state_file.map(|p| {
        let mut name = p.as_os_str().to_owned();
        name.push(".acme-account.json");
        PathBuf::from(name)
    });
    let settings = Settings { acme: config, account_file };
    std::thread::Builder::new().name("ringway-acme".into()).spawn(move || run(settings, rx, events_tx))?;
    let side = AcmeSide {
        tx,
        status: BTreeMap::new(),
        tokens: Vec::new(),
        queue: std::collections::VecDeque::new(),
        next_check: Instant::now(),
    };
    Ok((side, events_rx))
}

/// The helper thread's body: serves `Issue` commands until the control
/// thread drops its sender.
fn run(settings: Settings, mut cmds: tokio::sync::mpsc::UnboundedReceiver<AcmeCmd>, events: Sender<AcmeEvent>) {
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "the ACME runtime did not start");
            return;
        }
    };
    let settings = Arc::new(settings);
    let account: Arc<tokio::sync::Mutex<Option<Account>>> = Arc::default();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT));
    // Domains being worked on; a task leaves it before it reports, so an
    // `Issue` that follows a report is never taken for a duplicate.
    let running: Arc<std::sync::Mutex<HashSet<String>>> = Arc::default();
    rt.block_on(async move {
        while let Some(AcmeCmd::Issue(domains)) = cmds.recv().await {
            for domain in domains {
                let fresh = running.lock().map(|mut r| r.insert(domain.clone())).unwrap_or(false);
                if !fresh {
                    continue;
                }
                let (settings, account, slots) = (settings.clone(), account.clone(), slots.clone());
                let (events, running) = (events.clone(), running.clone());
                tokio::spawn(async move {
                    let Ok(_slot) = slots.acquire().await else { return };
                    let sink = Sink(events);
                    let ev = match issue(&settings, &account, &domain, &sink).await {
                        Ok((cert_pem, key_pem)) => AcmeEvent::Issued { domain: domain.clone(), cert_pem, key_pem },
                        Err(error) => AcmeEvent::Failed { domain: domain.clone(), error },
                    };
                    if let Ok(mut r) = running.lock() {
                        r.remove(&domain);
                    }
                    sink.send(ev);
                });
            }
        }
    });
}

/// Sends events to the control thread.
struct Sink(Sender<AcmeEvent>);

impl Sink {
    fn send(&self, ev: AcmeEvent) {
        let _ = self.0.send(ev);
    }
}

/// Takes a published token down again when the attempt ends, however it ends.
struct TokenGuard<'a> {
    sink: &'a Sink,
    tokens: Vec<String>,
}

impl Drop for TokenGuard<'_> {
    fn drop(&mut self) {
        for token in self.tokens.drain(..) {
            self.sink.send(AcmeEvent::ChallengeDone { token });
        }
    }
}

fn text(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// The account: loaded from its file, or created (and saved) once.
async fn account(settings: &Settings, cache: &tokio::sync::Mutex<Option<Account>>) -> Result<Account, String> {
    let mut slot = cache.lock().await;
    if let Some(a) = slot.as_ref() {
        return Ok(a.clone());
    }
    let builder = || match &settings.acme.ca_file {
        Some(f) => Account::builder_with_root(f).map_err(|e| format!("acme.caFile {}: {e}", f.display())),
        None => Account::builder().map_err(text),
    };
    let saved = settings
        .account_file
        .as_ref()
        .and_then(|f| std::fs::read(f).ok())
        .and_then(|b| serde_json::from_slice::<AccountCredentials>(&b).ok());
    let account = match saved {
        Some(creds) => builder()?.from_credentials(creds).await.map_err(text)?,
        None => {
            let contact: Vec<String> = settings.acme.email.iter().map(|e| format!("mailto:{e}")).collect();
            let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
            let new = NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false };
            let (account, creds) =
                builder()?.create(&new, settings.acme.directory.clone(), None).await.map_err(text)?;
            if let Some(f) = &settings.account_file {
                save_private(f, &serde_json::to_vec(&creds).map_err(text)?);
            }
            tracing::info!(directory = %settings.acme.directory, id = account.id(), "ACME account created");
            account
        }
    };
    *slot = Some(account.clone());
    Ok(account)
}

/// Writes `bytes` to `path`, readable by the owner only: a 0600 temporary
/// file, synced, renamed over it (an existing file's mode never leaks in).
fn save_private(path: &std::path::Path, bytes: &[u8]) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(bytes).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "the ACME account could not be saved");
    }
}

/// One order for `domain`, answered over HTTP-01: the chain and key.
async fn issue(
    settings: &Settings,
    cache: &tokio::sync::Mutex<Option<Account>>,
    domain: &str,
    sink: &Sink,
) -> Result<(String, String), String> {
    let account = account(settings, cache).await?;
    let ids = [Identifier::Dns(domain.to_string())];
    let mut order = account.new_order(&NewOrder::new(&ids)).await.map_err(text)?;
    let mut guard = TokenGuard { sink, tokens: Vec::new() };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.map_err(text)?;
        match authz.status {
            AuthorizationStatus::Pending => {}
            AuthorizationStatus::Valid => continue,
            other => return Err(format!("authorization is {other:?}")),
        }
        let mut challenge =
            authz.challenge(ChallengeType::Http01).ok_or("the CA offers no http-01 challenge for this name")?;
        let token = challenge.token.clone();
        let (ready, published) = tokio::sync::oneshot::channel();
        let key_authorization = challenge.key_authorization().as_str().to_string();
        sink.send(AcmeEvent::Challenge { token: token.clone(), key_authorization, ready });
        guard.tokens.push(token);
        let all = tokio::time::timeout(Duration::from_secs(15), published)
            .await
            .map_err(|_| "the workers did not take the challenge token in time".to_string())?
            .map_err(|_| "ringway is shutting down".to_string())?;
        if !all {
            return Err("not every worker took the challenge token within 1 s".into());
        }
        challenge.set_ready().await.map_err(text)?;
    }
    let retry = RetryPolicy::new().timeout(ORDER_TIMEOUT);
    let status = order.poll_ready(&retry).await.map_err(text)?;
    drop(guard);
    if status != OrderStatus::Ready {
        let why = order.state().error.as_ref().map(|p| format!("{p:?}")).unwrap_or_default();
        return Err(format!("the order is {status:?} {why}"));
    }
    let key_pem = order.finalize().await.map_err(text)?;
    let cert_pem = order.poll_certificate(&retry).await.map_err(text)?;
    Ok((cert_pem, key_pem))
}

impl super::Controller {
    /// Each managed domain's status, for the certificates list (`None`
    /// without ACME).
    pub(super) fn acme_status(&self) -> Option<serde_json::Map<String, serde_json::Value>> {
        let a = self.acme.as_ref()?;
        let now = Instant::now();
        Some(a.status.iter().map(|(d, s)| (d.clone(), status_json(d, s, &self.state, now))).collect())
    }

    /// Once a second: hands the helper every managed domain that is due and
    /// not already being worked on or backing off, forgets domains no longer
    /// managed, and stores issued certificates once no change is pending.
    pub(super) fn acme_tick(&mut self) {
        let Some(a) = self.acme.as_mut() else { return };
        let now = Instant::now();
        if self.pending.is_none() && !self.frozen {
            if let Some((domain, certificate)) = a.queue.pop_front() {
                let mut next = self.state.clone();
                let change = control::state::Change::PutCertificate { domain: domain.clone(), certificate };
                if let Err(e) = next.apply(&change) {
                    tracing::warn!(%domain, error = ?e, "ACME certificate refused");
                } else {
                    self.commit(next, &change, super::Origin::Acme(domain));
                }
                return;
            }
        }
        if now < a.next_check {
            return;
        }
        a.next_check = now + Duration::from_secs(1);
        let names: Vec<String> = self.static_certs.iter().flat_map(|(m, _)| m.sans.iter().cloned()).collect();
        let managed = managed_domains(&self.state, &names);
        a.status.retain(|d, s| s.in_flight || managed.contains(d));
        let unix = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let mut start = Vec::new();
        for domain in managed {
            // Issued and waiting to be stored: not due again.
            let queued = a.queue.iter().any(|(d, _)| *d == domain);
            let s = a.status.entry(domain.clone()).or_default();
            let waiting = s.retry_at.is_some_and(|t| now < t);
            if !s.in_flight && !waiting && !queued && due(&self.state, &domain, unix) {
                s.in_flight = true;
                start.push(domain);
            }
        }
        if !start.is_empty() {
            tracing::info!(domains = ?start, "ACME: requesting certificates");
            let _ = a.tx.send(AcmeCmd::Issue(start));
        }
    }

    /// What the helper reports.
    pub(super) fn on_acme(&mut self, ev: AcmeEvent) {
        let Some(a) = self.acme.as_mut() else { return };
        match ev {
            AcmeEvent::Challenge { token, key_authorization, ready } => {
                a.tokens.push((token, key_authorization));
                let tokens = Arc::new(a.tokens.clone());
                self.broadcast(control::messages::ControlMsg::AcmeTokens(tokens));
                // Every worker answers a stats flush after the messages
                // before it: once they have, each one serves the token.
                let all = self.flush_stats();
                let _ = ready.send(all);
            }
            AcmeEvent::ChallengeDone { token } => {
                a.tokens.retain(|(t, _)| *t != token);
                let tokens = Arc::new(a.tokens.clone());
                self.broadcast(control::messages::ControlMsg::AcmeTokens(tokens));
            }
            AcmeEvent::Issued { domain, cert_pem, key_pem } => {
                let s = a.status.entry(domain.clone()).or_default();
                s.in_flight = false;
                match crate::tls::check_certificate(&cert_pem, &key_pem) {
                    Ok(meta) => {
                        (s.failures, s.last_error, s.retry_at) = (0, None, None);
                        s.issued += 1;
                        tracing::info!(%domain, not_after = meta.not_after, issuer = %meta.issuer, "ACME certificate issued");
                        a.queue.push_back((domain, meta.into_certificate(cert_pem, key_pem, true)));
                    }
                    Err((field, why)) => {
                        let error = format!("the CA's answer is unusable ({field}): {why}");
                        Self::acme_failed(s, &domain, error);
                    }
                }
                self.acme_tick();
            }
            AcmeEvent::Failed { domain, error } => {
                let s = a.status.entry(domain.clone()).or_default();
                s.in_flight = false;
                Self::acme_failed(s, &domain, error);
            }
        }
    }

    /// A certificate that could not be stored (the state file): backs off
    /// like a failed order, so the CA is not asked again at once.
    pub(super) fn acme_store_failed(&mut self, domain: &str, error: String) {
        if let Some(a) = self.acme.as_mut() {
            let s = a.status.entry(domain.to_string()).or_default();
            Self::acme_failed(s, domain, error);
        }
    }

    fn acme_failed(s: &mut DomainStatus, domain: &str, error: String) {
        s.failures += 1;
        let wait = backoff(s.failures);
        tracing::warn!(%domain, failures = s.failures, retry_in_s = wait.as_secs(), %error, "ACME attempt failed");
        s.last_error = Some(error);
        s.retry_at = Some(Instant::now() + wait);
    }

    /// `ringway_acme_*` lines for /metrics.
    pub(super) fn acme_metrics(&self, out: &mut String) {
        use std::fmt::Write;
        let Some(a) = &self.acme else { return };
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let _ = writeln!(out, "# HELP ringway_acme_certificate ACME's state for a domain (1 on the current state).");
        let _ = writeln!(out, "# TYPE ringway_acme_certificate gauge");
        for (d, s) in &a.status {
            let state = s.phase(acme_cert(&self.state, d));
            let _ = writeln!(out, "ringway_acme_certificate{{domain=\"{}\",state=\"{state}\"}} 1", esc(d));
        }
        let _ = writeln!(out, "# HELP ringway_acme_failures Failed ACME attempts for a domain since its last success.");
        let _ = writeln!(out, "# TYPE ringway_acme_failures gauge");
        for (d, s) in &a.status {
            let _ = writeln!(out, "ringway_acme_failures{{domain=\"{}\"}} {}", esc(d), s.failures);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(not_before: i64, not_after: i64, acme: bool) -> Certificate {
        Certificate {
            cert_pem: String::new(),
            key_pem: String::new(),
            not_after,
            sans: vec!["a.test".into()],
            issuer: String::new(),
            not_before,
            acme,
        }
    }

    #[test]
    fn renewal_comes_two_thirds_into_the_lifetime() {
        let day = 86_400;
        assert_eq!(renew_at(&cert(0, 90 * day, true)), 60 * day);
        assert_eq!(renew_at(&cert(0, 0, true)), -30 * day, "unknown start: 30 days before expiry");
        let mut s = State::default();
        s.certificates.insert("a.test".into(), cert(0, 90 * day, true));
        assert!(!due(&s, "a.test", 59 * day));
        assert!(due(&s, "a.test", 60 * day));
        assert!(due(&s, "b.test", 0), "no certificate: due now");
        s.certificates.insert("c.test".into(), cert(0, 10, false));
        assert!(!due(&s, "c.test", 100), "the operator's certificate is never ACME's business");
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(5), Duration::from_secs(160));
        assert_eq!(backoff(40), MAX_BACKOFF);
    }
}
