//! Auth: HTTP Basic against bcrypt or argon2id hashes, and Bearer tokens
//! known only by their SHA-256.
//!
//! A password hash costs tens of milliseconds by design, so it is never
//! computed on the worker: it runs on the blocking pool (monoio's
//! `spawn_blocking`), at most `MAX_PENDING` at once per worker (beyond
//! that: 503), and each outcome is cached per worker, keyed by the SHA-256
//! of the credential as sent: a success for `PASS_TTL`, a failure for
//! `FAIL_TTL` (so a client retrying a wrong password costs one hash, not
//! one per request). An unknown user is checked against a dummy hash, so
//! timing does not tell which users exist. Bearer tokens are compared in
//! constant time, digest against digest.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use control::policy::Auth;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Cached successes last this long.
const PASS_TTL: Duration = Duration::from_secs(60);
/// Cached failures last this long.
const FAIL_TTL: Duration = Duration::from_secs(5);
/// Verifications in flight per worker, at most.
const MAX_PENDING: usize = 32;
/// Cached outcomes per worker and rule, at most (then the cache restarts).
const MAX_CACHED: usize = 10_000;

/// A bcrypt hash of a random password (cost 10, as `htpasswd -B` uses):
/// what an unknown user is checked against.
const DUMMY_HASH: &str = "$2b$10$7EqJtq98hPqEX7fNZaFWoOa/Ac/Dlx8I/R7dMDGXQzJcV.5p8kO1.";

/// What auth decided.
pub enum Verdict {
    Pass,
    Deny,
    Busy,
}

enum Kind {
    Basic { users: HashMap<String, Arc<str>> },
    Bearer { tokens: Vec<[u8; 32]> },
}

/// One rule's auth, with its verification cache.
pub struct AuthRt {
    kind: Kind,
    challenge: Rc<[u8]>,
    cache: RefCell<HashMap<[u8; 32], (Instant, bool)>>,
    pending: Cell<usize>,
    /// Credentials being verified now: a request with one of them waits
    /// for that outcome instead of hashing again (50 connections opening
    /// with the same password cost one hash, not 50).
    verifying: RefCell<std::collections::HashSet<[u8; 32]>>,
}

/// How long a request waits for another's verification of its credential.
const JOIN_WAIT: Duration = Duration::from_secs(5);

fn strip_scheme<'a>(header: &'a [u8], scheme: &[u8]) -> Option<&'a [u8]> {
    let n = scheme.len();
    (header.len() > n && header[..n].eq_ignore_ascii_case(scheme) && header[n] == b' ')
        .then(|| header[n + 1..].trim_ascii())
}

/// Whether `pass` matches `hash` (bcrypt or argon2id). Blocking.
fn verify(hash: &str, pass: &[u8]) -> bool {
    if hash.starts_with("$argon2id$") {
        use argon2::password_hash::{PasswordHash, PasswordVerifier};
        PasswordHash::new(hash).is_ok_and(|h| argon2::Argon2::default().verify_password(pass, &h).is_ok())
    } else {
        bcrypt::verify(pass, hash).unwrap_or(false)
    }
}

impl AuthRt {
    /// The runtime form of `a` (`None` for `none`).
    pub fn new(a: &Auth) -> Option<AuthRt> {
        let (kind, challenge) = match a {
            Auth::Off => return None,
            Auth::Basic { realm, users } => (
                Kind::Basic { users: users.iter().map(|(u, h)| (u.clone(), Arc::from(h.as_str()))).collect() },
                format!("www-authenticate: Basic realm=\"{realm}\", charset=\"UTF-8\"\r\n"),
            ),
            Auth::Bearer { tokens } => (Kind::Bearer { tokens: tokens.clone() }, "www-authenticate: Bearer\r\n".into()),
        };
        Some(AuthRt {
            kind,
            challenge: Rc::from(challenge.into_bytes()),
            cache: RefCell::default(),
            pending: Cell::new(0),
            verifying: RefCell::default(),
        })
    }

    /// The `WWW-Authenticate` line of a 401.
    pub fn challenge(&self) -> Rc<[u8]> {
        self.challenge.clone()
    }

    /// Checks the request's `Authorization` value.
    pub async fn check(&self, header: Option<&[u8]>) -> Verdict {
        match &self.kind {
            Kind::Bearer { tokens } => {
                let Some(token) = header.and_then(|h| strip_scheme(h, b"bearer")) else { return Verdict::Deny };
                let d: [u8; 32] = Sha256::digest(token).into();
                let hit = tokens.iter().fold(subtle::Choice::from(0), |acc, t| acc | t.ct_eq(&d));
                if bool::from(hit) {
                    Verdict::Pass
                } else {
                    Verdict::Deny
                }
            }
            Kind::Basic { users } => {
                let Some(cred) = header.and_then(|h| strip_scheme(h, b"basic")) else { return Verdict::Deny };
                let key: [u8; 32] = Sha256::digest(cred).into();
                let now = Instant::now();
                if let Some(&(until, ok)) = self.cache.borrow().get(&key) {
                    if now < until {
                        return if ok { Verdict::Pass } else { Verdict::Deny };
                    }
                }
                // Boxed: rare (a cache miss), and inline it would grow
                // every request's future on auth routes.
                Box::pin(self.verify_miss(users, cred, key)).await
            }
        }
    }

    /// A credential not in the cache: decoded, then verified off the worker.
    async fn verify_miss(&self, users: &HashMap<String, Arc<str>>, cred: &[u8], key: [u8; 32]) -> Verdict {
        if self.verifying.borrow().contains(&key) {
            return self.join(key).await;
        }
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(cred) else { return Verdict::Deny };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else { return Verdict::Deny };
        let user = String::from_utf8_lossy(&decoded[..colon]).into_owned();
        let pass = decoded[colon + 1..].to_vec();
        let (hash, known) = match users.get(&user) {
            Some(h) => (h.clone(), true),
            None => (Arc::from(DUMMY_HASH), false),
        };
        if self.pending.get() >= MAX_PENDING {
            return Verdict::Busy;
        }
        self.pending.set(self.pending.get() + 1);
        self.verifying.borrow_mut().insert(key);
        let ok = monoio::spawn_blocking(move || verify(&hash, &pass)).await.unwrap_or(false) && known;
        self.verifying.borrow_mut().remove(&key);
        self.pending.set(self.pending.get() - 1);
        let mut cache = self.cache.borrow_mut();
        if cache.len() >= MAX_CACHED {
            cache.clear();
        }
        cache.insert(key, (Instant::now() + if ok { PASS_TTL } else { FAIL_TTL }, ok));
        if ok {
            Verdict::Pass
        } else {
            Verdict::Deny
        }
    }

    /// Waits (bounded) for another request's verification of `key`.
    async fn join(&self, key: [u8; 32]) -> Verdict {
        let give_up = Instant::now() + JOIN_WAIT;
        while Instant::now() < give_up {
            monoio::time::sleep(Duration::from_millis(2)).await;
            if let Some(&(_, ok)) = self.cache.borrow().get(&key) {
                return if ok { Verdict::Pass } else { Verdict::Deny };
            }
            if !self.verifying.borrow().contains(&key) {
                break;
            }
        }
        Verdict::Busy
    }
}
