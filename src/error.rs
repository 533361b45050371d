//! The proxy's one error type: what failed, on which side, whether a
//! retry on another backend is safe, and the I/O cause. Every failure
//! before the first response byte is one of these; `status` is the one
//! place that maps it to a response.

use std::fmt;
use std::io;

/// Which side of the proxy failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The downstream client.
    Client,
    /// The upstream backend.
    Upstream,
    /// ringway itself (routing, admission, limits).
    Proxy,
}

/// What went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No route for the Host.
    NoRoute,
    /// CONNECT and the like.
    MethodNotAllowed,
    /// Body larger than the limit.
    BodyTooLarge,
    /// Malformed request framing found while streaming the body.
    BadBody,
    /// No backend is up.
    NoBackend,
    /// Admission queue full or the wait expired.
    Overloaded,
    /// TCP connect refused or failed.
    ConnectFailed,
    /// TCP connect did not finish in time.
    ConnectTimeout,
    /// Writing to or reading from the backend failed before a response.
    UpstreamIo,
    /// The backend closed a reused connection before answering.
    StaleConnection,
    /// An HTTP/2 backend refused the stream (REFUSED_STREAM: not
    /// processed, RFC 9113 8.7): safe to send again, whatever the method.
    StreamRefused,
    /// No response head within the upstream timeout.
    ResponseTimeout,
    /// The backend sent a malformed response head or body.
    BadResponse,
    /// The client went away or stalled.
    ClientIo,
    /// The request head is malformed (400), its line too long (414), its
    /// fields too large (431) or its transfer coding unknown (501).
    BadRequest(u16),
    /// The request head did not complete in time (408).
    HeadTimeout,
}

/// When a failed attempt may be tried again on another backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Never (the client side failed, or the backend may have acted).
    Never,
    /// Always: no connection was made, whatever the method.
    Always,
    /// When the request is idempotent and was wholly held: the backend
    /// failed before sending any response byte.
    IfIdempotent,
    /// Only because the connection came from the pool (the backend closed
    /// it while idle): once more on a fresh connection.
    IfReused,
}

/// A classified failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyError {
    /// What went wrong.
    pub kind: Kind,
    /// Static context for logs.
    pub context: &'static str,
    /// The I/O error behind it, if any.
    pub cause: Option<io::ErrorKind>,
}

impl ProxyError {
    /// Builds an error.
    pub const fn new(kind: Kind, context: &'static str) -> Self {
        ProxyError { kind, context, cause: None }
    }

    /// Records the I/O error behind this one.
    pub fn caused_by(mut self, e: &io::Error) -> Self {
        self.cause = Some(e.kind());
        self
    }

    /// When a retry on another backend is safe.
    pub fn retry(&self) -> Retry {
        match self.kind {
            Kind::ConnectFailed | Kind::ConnectTimeout | Kind::StreamRefused => Retry::Always,
            Kind::StaleConnection => Retry::IfReused,
            Kind::UpstreamIo | Kind::ResponseTimeout | Kind::BadResponse => Retry::IfIdempotent,
            _ => Retry::Never,
        }
    }

    /// Whether this failure may be retried on another backend, given the
    /// request (`idempotent_and_held`: idempotent method, whole body held)
    /// and whether body bytes already streamed to a backend.
    pub fn retry_safe(&self, idempotent_and_held: bool, body_sent: bool) -> bool {
        !body_sent
            && match self.retry() {
                Retry::Always => true,
                Retry::IfIdempotent | Retry::IfReused => idempotent_and_held,
                Retry::Never => false,
            }
    }

    /// Which side failed.
    pub fn side(&self) -> Side {
        match self.kind {
            Kind::NoRoute | Kind::MethodNotAllowed | Kind::BodyTooLarge | Kind::NoBackend | Kind::Overloaded => {
                Side::Proxy
            }
            Kind::BadBody | Kind::ClientIo | Kind::BadRequest(_) | Kind::HeadTimeout => Side::Client,
            _ => Side::Upstream,
        }
    }

    /// Counts against the backend's health (passive check).
    pub fn is_passive_failure(&self) -> bool {
        matches!(self.kind, Kind::ConnectFailed | Kind::ConnectTimeout | Kind::ResponseTimeout)
    }

    /// The status the client gets for this error (the one place it is decided).
    pub fn status(&self) -> u16 {
        match self.kind {
            Kind::NoRoute => 404,
            Kind::MethodNotAllowed => 405,
            Kind::BodyTooLarge => 413,
            Kind::BadBody => 400,
            Kind::NoBackend | Kind::Overloaded => 503,
            Kind::ConnectFailed
            | Kind::UpstreamIo
            | Kind::StaleConnection
            | Kind::StreamRefused
            | Kind::BadResponse => 502,
            Kind::ConnectTimeout | Kind::ResponseTimeout => 504,
            Kind::ClientIo => 400,
            Kind::BadRequest(status) => status,
            Kind::HeadTimeout => 408,
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({:?} side): {}", self.kind, self.side(), self.context)?;
        match self.cause {
            Some(c) => write!(f, ": {c}"),
            None => Ok(()),
        }
    }
}

impl std::error::Error for ProxyError {}
