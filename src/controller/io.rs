//! The control side's I/O thread: one monoio runtime for the admin listener
//! (many connections, long-lived dashboard polls included) and the health
//! probes. It talks to the control thread over channels, like a worker, and
//! never touches the state itself.

use std::net::TcpListener;

use crossbeam_channel::Sender;

use super::admin::{self, AdminCall, AdminSettings};
use super::probe::{self, ProbeCmd, ProbeResult};
use crate::runtime::Driver;
use crate::worker::inbox::Inbox;

/// The admin listener and where its requests go.
pub(super) struct AdminSide {
    /// The bound listener.
    pub(super) listener: TcpListener,
    /// Its checks.
    pub(super) settings: AdminSettings,
    /// Requests for the control thread.
    pub(super) calls: Sender<AdminCall>,
}

/// The thread body: serves until the control thread drops the probe
/// command sender (the probe schedule ends, and the runtime with it).
pub(super) fn run(probes: Inbox<ProbeCmd>, results: Sender<ProbeResult>, admin: Option<AdminSide>, driver: Driver) {
    let driver = crate::runtime::resolve_driver(driver);
    let body = async move {
        if let Some(a) = admin {
            monoio::spawn(admin::serve(a.listener, a.settings, a.calls));
        }
        probe::schedule(probes, results).await;
    };
    if let Err(e) = crate::runtime::block_on(driver, body) {
        tracing::error!(error = %e, "the control I/O runtime did not start");
    }
}
