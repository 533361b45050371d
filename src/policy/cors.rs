//! CORS: preflights (`OPTIONS` with `Origin` and
//! `Access-Control-Request-Method`) are answered here and never reach a
//! backend; other requests from an allowed origin get the
//! `Access-Control-*` headers added to their response, with `Vary: Origin`.
//! A request from an origin not allowed passes without them (the browser
//! then withholds the response from the page); its preflight gets 403.

use control::policy::Cors;

use crate::http::RequestView;

/// What CORS made of a request.
pub enum Outcome {
    /// Proxy it (response headers, if any, were written).
    Pass,
    /// A preflight to answer 204 (its headers were written).
    Preflight,
    /// A preflight from an origin, or for a method or header, not allowed.
    Forbidden,
}

/// CORS settings with their header values prepared.
pub struct CorsRt {
    cfg: Cors,
    methods: Box<[u8]>,
    max_age: Box<[u8]>,
    expose: Box<[u8]>,
}

fn joined(items: &[String]) -> Box<[u8]> {
    items.join(", ").into_bytes().into_boxed_slice()
}

impl CorsRt {
    /// Prepares `cfg`.
    pub fn new(cfg: &Cors) -> CorsRt {
        CorsRt {
            methods: joined(&cfg.methods),
            max_age: cfg.max_age_s.to_string().into_bytes().into_boxed_slice(),
            expose: joined(&cfg.expose),
            cfg: cfg.clone(),
        }
    }

    fn origin_allowed(&self, origin: &[u8]) -> bool {
        self.cfg.any_origin || self.cfg.origins.iter().any(|o| o.as_bytes().eq_ignore_ascii_case(origin))
    }

    /// Writes the header lines for an allowed origin: the origin (or `*`),
    /// credentials, and `Vary: Origin`.
    fn allow_origin(&self, origin: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(b"access-control-allow-origin: ");
        if self.cfg.any_origin && !self.cfg.credentials {
            out.push(b'*');
        } else {
            out.extend_from_slice(origin);
        }
        out.extend_from_slice(b"\r\nvary: Origin\r\n");
        if self.cfg.credentials {
            out.extend_from_slice(b"access-control-allow-credentials: true\r\n");
        }
    }

    /// Checks a request; writes the header lines its answer gets to `out`.
    pub fn check(&self, view: &RequestView<'_>, out: &mut Vec<u8>) -> Outcome {
        let Some(origin) = view.header(b"origin") else { return Outcome::Pass };
        let preflight = view.method() == b"OPTIONS";
        let requested = view.header(b"access-control-request-method");
        match (preflight, requested) {
            (true, Some(method)) => self.preflight(view, origin, method, out),
            _ => {
                if self.origin_allowed(origin) {
                    self.allow_origin(origin, out);
                    if !self.expose.is_empty() {
                        out.extend_from_slice(b"access-control-expose-headers: ");
                        out.extend_from_slice(&self.expose);
                        out.extend_from_slice(b"\r\n");
                    }
                }
                Outcome::Pass
            }
        }
    }

    fn preflight(&self, view: &RequestView<'_>, origin: &[u8], method: &[u8], out: &mut Vec<u8>) -> Outcome {
        let method_ok = self.cfg.methods.iter().any(|m| m.as_bytes().eq_ignore_ascii_case(method));
        let asked = view.header(b"access-control-request-headers").unwrap_or(b"");
        let headers_ok = asked
            .split(|&b| b == b',')
            .map(|h| h.trim_ascii())
            .filter(|h| !h.is_empty())
            .all(|h| self.cfg.headers.iter().any(|a| a.as_bytes().eq_ignore_ascii_case(h)));
        if !self.origin_allowed(origin) || !method_ok || !headers_ok {
            return Outcome::Forbidden;
        }
        self.allow_origin(origin, out);
        out.extend_from_slice(b"access-control-allow-methods: ");
        out.extend_from_slice(&self.methods);
        out.extend_from_slice(b"\r\n");
        if !asked.is_empty() {
            out.extend_from_slice(b"access-control-allow-headers: ");
            out.extend_from_slice(asked.trim_ascii());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"access-control-max-age: ");
        out.extend_from_slice(&self.max_age);
        out.extend_from_slice(b"\r\n");
        Outcome::Preflight
    }
}
