//! The proxy's one error type: what failed, on which side, and whether a
//! retry on another backend is safe. One function maps it to a response.

use std::fmt;

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
    /// No response head within the upstream timeout.
    ResponseTimeout,
    /// The backend sent a malformed response head or body.
    BadResponse,
    /// The client went away or stalled.
    ClientIo,
}

/// A classified failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyError {
    /// What went wrong.
    pub kind: Kind,
    /// Static context for logs.
    pub context: &'static str,
}

impl ProxyError {
    /// Builds an error.
    pub const fn new(kind: Kind, context: &'static str) -> Self {
        ProxyError { kind, context }
    }

    /// Which side failed.
    pub fn side(&self) -> Side {
        match self.kind {
            Kind::NoRoute | Kind::MethodNotAllowed | Kind::BodyTooLarge | Kind::NoBackend | Kind::Overloaded => {
                Side::Proxy
            }
            Kind::BadBody | Kind::ClientIo => Side::Client,
            _ => Side::Upstream,
        }
    }

    /// No connection to the backend was established: a retry elsewhere is
    /// always safe, whatever the method.
    pub fn before_connect(&self) -> bool {
        matches!(self.kind, Kind::ConnectFailed | Kind::ConnectTimeout)
    }

    /// The backend failed before sending any response byte.
    pub fn before_response(&self) -> bool {
        matches!(
            self.kind,
            Kind::ConnectFailed
                | Kind::ConnectTimeout
                | Kind::UpstreamIo
                | Kind::StaleConnection
                | Kind::ResponseTimeout
                | Kind::BadResponse
        )
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
            Kind::ConnectFailed | Kind::UpstreamIo | Kind::StaleConnection | Kind::BadResponse => 502,
            Kind::ConnectTimeout | Kind::ResponseTimeout => 504,
            Kind::ClientIo => 400,
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} ({:?} side): {}", self.kind, self.side(), self.context)
    }
}

impl std::error::Error for ProxyError {}
