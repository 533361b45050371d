//! Process wiring: bind the proxy sockets, create the channels, spawn and
//! pin the workers on their own monoio runtimes, start the control thread,
//! and wait until every worker holds its first snapshot and listens.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use control::messages::WorkerEvent;
use control::model::Config;
use crossbeam_channel::{Receiver, Sender};
use socket2::{Domain, Protocol, Socket, Type};

use crate::controller::{ControlCmd, Controller};
use crate::serve::WorkerSetup;
use crate::upgrade::Kind;
use crate::worker::inbox::{inbox, InboxSender};
use crate::worker::Shared;

/// Which io driver the workers use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Driver {
    /// io_uring.
    Uring,
    /// epoll.
    Epoll,
    /// io_uring when the kernel allows it, else epoll.
    Auto,
}

impl Driver {
    /// Parses `uring`, `epoll` or `auto`.
    pub fn parse(s: &str) -> Option<Driver> {
        match s {
            "uring" | "io_uring" | "iouring" => Some(Driver::Uring),
            "epoll" | "legacy" => Some(Driver::Epoll),
            "auto" => Some(Driver::Auto),
            _ => None,
        }
    }
}

/// A running ringway: where it listens and how to stop it.
pub struct Running {
    /// Proxy addresses actually bound (port 0 resolved).
    pub proxy_addrs: Vec<SocketAddr>,
    /// Bound TLS listen addresses (actual ports).
    pub tls_addrs: Vec<SocketAddr>,
    /// Admin address, if any.
    pub admin_addr: Option<SocketAddr>,
    /// Commands to the control thread.
    pub control: Sender<ControlCmd>,
    /// Duplicates of every listening socket, for a binary upgrade.
    pub sockets: crate::upgrade::Sockets,
    workers: Vec<JoinHandle<()>>,
    control_thread: Option<JoinHandle<()>>,
    /// The access-log writer: joined last, once every worker (and so
    /// every sink) is gone, so lines written before exit reach the file.
    log_thread: Option<JoinHandle<()>>,
}

impl Running {
    /// Asks for a graceful shutdown and waits for every thread.
    pub fn shutdown(mut self) {
        let _ = self.control.send(ControlCmd::Shutdown);
        self.join();
    }

    /// Waits for every thread to exit.
    pub fn join(&mut self) {
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
        if let Some(h) = self.control_thread.take() {
            let _ = h.join();
        }
        if let Some(h) = self.log_thread.take() {
            // Bounded: the writer ends when the last sink drops.
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !h.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

/// Binds one SO_REUSEPORT socket (not yet listening).
fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nodelay(true)?;
    socket.bind(&addr.into()).map_err(|e| io::Error::new(e.kind(), format!("bind {addr}: {e}")))?;
    Ok(socket.into())
}

/// Each worker's listening sockets.
type PerWorker = Vec<Vec<std::net::TcpListener>>;

/// Where the listening sockets come from: handed over by the process this
/// one replaces (matched by kind and configured address), else bound here.
struct Listeners<'a> {
    workers: usize,
    inherited: &'a mut crate::upgrade::Sockets,
    /// Duplicates of every socket, for the next upgrade.
    kept: &'a mut crate::upgrade::Sockets,
}

impl Listeners<'_> {
    /// The sockets of every address, spread over the workers: inherited
    /// ones first (all of them are served, so none with connections waiting
    /// is closed), then one bound per worker still without one. Port 0 is
    /// resolved once, so all workers share the same port.
    fn bind_all(&mut self, kind: Kind, addrs: &[SocketAddr]) -> io::Result<(Vec<SocketAddr>, PerWorker)> {
        let mut per_worker: PerWorker = (0..self.workers).map(|_| Vec::new()).collect();
        let mut bound = Vec::new();
        for &addr in addrs {
            let mut socks = self.inherited.take(kind, addr);
            if socks.is_empty() {
                socks.push(bind_reuseport(addr)?);
            }
            let actual = socks[0].local_addr()?;
            while socks.len() < self.workers {
                socks.push(bind_reuseport(actual)?);
            }
            bound.push(actual);
            for (i, s) in socks.into_iter().enumerate() {
                self.kept.keep(kind, addr, &s)?;
                per_worker[i % self.workers].push(s);
            }
        }
        Ok((bound, per_worker))
    }
}

/// Raises the open-file soft limit to the hard limit.
pub fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit with a valid, local struct.
    unsafe {
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

pub fn resolve_driver(d: Driver) -> Driver {
    match d {
        Driver::Auto => {
            if monoio::utils::detect_uring() {
                Driver::Uring
            } else {
                tracing::warn!("io_uring is not available here: using the epoll driver");
                Driver::Epoll
            }
        }
        Driver::Uring if !monoio::utils::detect_uring() => {
            tracing::warn!("io_uring was asked for but is not available: using the epoll driver");
            Driver::Epoll
        }
        other => other,
    }
}

/// Runs `f` to completion on a new monoio runtime (with timers) of the
/// given driver (already resolved: `Auto` means io_uring).
pub fn block_on<F: std::future::Future>(driver: Driver, f: F) -> io::Result<F::Output> {
    match driver {
        Driver::Uring | Driver::Auto => {
            let build = |urb: io_uring::Builder| {
                monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                    .with_entries(4096)
                    .uring_builder(urb)
                    .enable_timer()
                    .attach_thread_pool(Box::new(blocking_pool()))
                    .build()
            };
            // Completions from other cores wait for the worker's next
            // system call instead of interrupting it with an IPI each
            // (COOP_TASKRUN: about a fifth less CPU per small request
            // here). Not DEFER_TASKRUN: it runs completions only on a
            // waiting enter, and monoio's busy loop submits without one.
            // Kernels before 5.19 refuse the flag and get the default.
            let mut coop = io_uring::IoUring::builder();
            coop.setup_coop_taskrun();
            build(coop).or_else(|_| build(io_uring::IoUring::builder())).map(|mut rt| rt.block_on(f))
        }
        Driver::Epoll => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .attach_thread_pool(Box::new(blocking_pool()))
            .build()
            .map(|mut rt| rt.block_on(f)),
    }
}

/// The process's pool for blocking work a runtime hands off
/// (`monoio::spawn_blocking`: password hashes), shared by every runtime.
fn blocking_pool() -> monoio::blocking::DefaultThreadPool {
    static POOL: std::sync::OnceLock<monoio::blocking::DefaultThreadPool> = std::sync::OnceLock::new();
    POOL.get_or_init(|| monoio::blocking::DefaultThreadPool::new(2)).clone()
}

fn run_worker(driver: Driver, setup: WorkerSetup) {
    let index = setup.index;
    let events = setup.events.clone();
    let result = block_on(driver, crate::serve::run(setup));
    if let Err(e) = result {
        let _ = events.send(WorkerEvent::Failed { worker: index, reason: format!("runtime: {e}") });
    }
}

/// Starts workers and the control thread; returns once every worker has
/// applied the first snapshot and is accepting.
pub fn start(config: Config, workers: Option<usize>, driver: Driver) -> io::Result<Running> {
    start_with(config, Options { workers, driver, state_file: None, reset_state: false, inherited: Default::default() })
}

/// How to start, beyond the config.
#[derive(Debug)]
pub struct Options {
    /// Worker count (overrides the config).
    pub workers: Option<usize>,
    /// io driver.
    pub driver: Driver,
    /// Where the API's changes persist (`None`: not persisted).
    pub state_file: Option<std::path::PathBuf>,
    /// Ignore an existing state file and start from the config's routes.
    pub reset_state: bool,
    /// Listening sockets handed over by the process this one replaces.
    pub inherited: crate::upgrade::Sockets,
}

/// Starts with every option.
pub fn start_with(mut config: Config, opts: Options) -> io::Result<Running> {
    let Options { workers, driver, state_file, reset_state, mut inherited } = opts;
    let mut kept = crate::upgrade::Sockets::default();
    // Certificate files become PEM text here, checked; a bad one stops the start.
    let static_certs = crate::tls::prepare(&mut config).map_err(io::Error::other)?;
    // An existing state file wins over the config's routes (resume where
    // you were); a corrupt one stops the start and is left alone.
    let defaults = control::model::RouteDefaults::of(&config);
    // From here the routes live in the state only (the config's copy would
    // double the memory 10,000 routes take). When the state file wins, the
    // config's routes go first, so that the state's take their place
    // rather than leave them as holes between them.
    let mut config_routes = std::mem::take(&mut config.routes);
    let state = match &state_file {
        Some(path) if !reset_state => match crate::controller::statefile::read_text(path).map_err(io::Error::other)? {
            Some(text) => {
                config_routes = Vec::new();
                Some(crate::controller::statefile::parse(path, text, &defaults).map_err(io::Error::other)?)
            }
            None => None,
        },
        _ => None,
    };
    let resumed = state.is_some();
    let state = match state {
        Some(s) => {
            tracing::info!(routes = s.routes.len(), "resuming from the state file");
            s
        }
        None => control::state::State::new(config_routes),
    };
    let admin = match &config.admin {
        Some(a) => {
            let l = match inherited.take(Kind::Admin, a.listen).pop() {
                Some(l) => l,
                None => std::net::TcpListener::bind(a.listen)
                    .map_err(|e| io::Error::new(e.kind(), format!("admin listen {}: {e}", a.listen)))?,
            };
            kept.keep(Kind::Admin, a.listen, &l)?;
            let addr = l.local_addr()?;
            Some((l, crate::controller::admin::AdminSettings { addr, token: a.token.clone() }))
        }
        None => None,
    };
    raise_nofile_limit();
    let cores = core_affinity::get_core_ids().unwrap_or_default();
    let n = workers.or(config.workers).unwrap_or(cores.len().max(1)).max(1);
    let driver = resolve_driver(driver);
    tracing::info!(workers = n, driver = ?driver, "starting");
    let mut listeners = Listeners { workers: n, inherited: &mut inherited, kept: &mut kept };
    let (proxy_addrs, mut sockets) = listeners.bind_all(Kind::Proxy, &config.listen)?;
    let tls_listen = config.tls.as_ref().map(|t| t.listen.clone()).unwrap_or_default();
    let (tls_addrs, tls_sockets) = listeners.bind_all(Kind::Tls, &tls_listen)?;
    // Inherited sockets this config no longer listens on close here (the
    // old process drains what it accepted on them).
    drop(inherited);
    let mut tls_sockets = tls_sockets.into_iter();
    let shared = Arc::new(Shared::default());
    let (access_log, log_thread) = match &config.access_log {
        Some(path) => {
            let (sink, thread) = crate::accesslog::start(path)
                .map_err(|e| io::Error::new(e.kind(), format!("access log {}: {e}", path.display())))?;
            (Some(sink), Some(thread))
        }
        None => (None, None),
    };
    let (ev_tx, ev_rx): (Sender<WorkerEvent>, Receiver<WorkerEvent>) = crossbeam_channel::unbounded();
    let mut senders: Vec<InboxSender> = Vec::new();
    let mut handles = Vec::new();
    for (i, socks) in sockets.drain(..).enumerate() {
        let (tx, rx) = inbox();
        senders.push(tx);
        let setup = WorkerSetup {
            index: i,
            sockets: socks,
            tls_sockets: tls_sockets.next().unwrap_or_default(),
            tls_port: tls_addrs.first().map(|a| a.port()),
            inbox: rx,
            events: ev_tx.clone(),
            shared: shared.clone(),
            workers: n,
            access_log: access_log.clone(),
        };
        let core = if cores.is_empty() { None } else { Some(cores[i % cores.len()]) };
        let h = std::thread::Builder::new().name(format!("ringway-w{i}")).spawn(move || {
            if let Some(c) = core {
                core_affinity::set_for_current(c);
            }
            run_worker(driver, setup);
        })?;
        handles.push(h);
    }
    drop(ev_tx);
    let admin_addr = admin.as_ref().map(|(_, s)| s.addr);
    let (cmd_tx, cmd_rx) = crossbeam_channel::unbounded();
    let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
    let channels = crate::controller::Channels { workers: senders, events: ev_rx, cmds: cmd_rx, shared };
    let mut controller = Controller::new(config, state, state_file, admin, channels, static_certs);
    if resumed {
        controller = controller.resumed();
    }
    let control_thread =
        std::thread::Builder::new().name("ringway-control".into()).spawn(move || controller.run(ready_tx))?;
    let running = Running {
        proxy_addrs,
        tls_addrs,
        admin_addr,
        sockets: kept,
        control: cmd_tx,
        workers: handles,
        control_thread: Some(control_thread),
        log_thread,
    };
    drop(access_log);
    match ready_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(Ok(())) => Ok(running),
        Ok(Err(reason)) => {
            running.shutdown();
            Err(io::Error::other(reason))
        }
        Err(_) => {
            running.shutdown();
            Err(io::Error::other("workers did not start within 30 s"))
        }
    }
}
