//! The `ringway` command: `run`, `check`, `demo`.

use std::process::ExitCode;

use ringway::runtime::{self, Driver};

const HELP: &str = "ringway — HTTP reverse proxy and load balancer (thread per core, io_uring)

USAGE:
    ringway run --config FILE [--workers N] [--driver uring|epoll|auto]
    ringway check --config FILE
    ringway demo [--listen ADDR] [--admin ADDR] [--workers N]
    ringway ctl [--admin ADDR] [--token T] COMMAND   (see ringway ctl --help)
    ringway help
    ringway --version

COMMANDS:
    run     Run the proxy with a JSON config file. Prints one line
            `listening proxy=ADDR[,ADDR] admin=ADDR|- tls=ADDR[,ADDR]|-` once every worker
            accepts. SIGTERM/SIGINT drain and exit 0.
    check   Validate a config file; print every error with its JSON path;
            exit 1 on error.
    demo    Run ringway on 127.0.0.1:8080 in front of three built-in demo
            backends on loopback, with the admin API and dashboard on
            127.0.0.1:9901, and print a curl loop that shows the balancing.
";

const RUN_HELP: &str = "USAGE: ringway run --config FILE [--workers N] [--driver uring|epoll|auto] [--reset-state]

    --config FILE    JSON config (see README.md)
    --workers N      worker threads, one per core by default
    --driver D       io driver: uring (default), epoll, or auto
    --reset-state    ignore the state file and start from the config's routes
";

const CHECK_HELP: &str = "USAGE: ringway check --config FILE

Validates FILE and prints every error with its JSON path; exit 1 on error.
";

const DEMO_HELP: &str = "USAGE: ringway demo [--listen ADDR] [--admin ADDR] [--workers N]

Starts three demo backends on loopback and ringway in front of them
(default 127.0.0.1:8080), with the admin API and the dashboard on
127.0.0.1:9901 (no token: loopback only), then prints a curl loop, the
dashboard's URL and a `ringway ctl` example.
";

struct Args {
    config: Option<String>,
    reset_state: bool,
    workers: Option<usize>,
    driver: Driver,
    listen: Option<String>,
    admin: Option<String>,
    help: bool,
}

fn parse_args(rest: &[String]) -> Result<Args, String> {
    let mut a = Args {
        config: None,
        reset_state: false,
        workers: None,
        driver: Driver::Uring,
        listen: None,
        admin: None,
        help: false,
    };
    let mut it = rest.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or_else(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--config" | "-c" => a.config = Some(value("--config")?),
            "--workers" | "-w" => {
                let v = value("--workers")?;
                a.workers = Some(
                    v.parse()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or_else(|| format!("--workers: {v:?} is not a positive number"))?,
                );
            }
            "--driver" => {
                let v = value("--driver")?;
                a.driver = Driver::parse(&v).ok_or_else(|| format!("--driver: {v:?} is not uring, epoll or auto"))?;
            }
            "--listen" => a.listen = Some(value("--listen")?),
            "--admin" => a.admin = Some(value("--admin")?),
            "--reset-state" => a.reset_state = true,
            "--help" | "-h" => a.help = true,
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(a)
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RINGWAY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn load(path: &str) -> Result<control::model::Config, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let mut config = control::model::parse_config(&text).map_err(|e| e.to_string())?;
    if config.cluster.is_some() && !cfg!(feature = "cluster") {
        return Err("cluster: cluster mode is not in this build: cargo build --release --features cluster \
             (the etcd client's build needs protoc: apt-get install protobuf-compiler)"
            .into());
    }
    // Certificate files are read and checked here, so `check` reports them too.
    ringway::tls::prepare(&mut config)?;
    Ok(config)
}

/// Blocks the signals we handle in every thread (call before spawning any),
/// so that `wait_for_signal` receives them synchronously.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset manipulation on a local, zeroed set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) -> i32 {
    loop {
        let mut sig: libc::c_int = 0;
        // SAFETY: sigwait with a valid set and out-pointer.
        let rc = unsafe { libc::sigwait(set, &mut sig) };
        if rc == 0 {
            return sig;
        }
    }
}

/// Where the state file lives: the config's `stateFile`, else beside the
/// config file (`ringway.json` → `ringway.state.json`).
fn state_file_for(config: &control::model::Config, config_path: Option<&str>) -> Option<std::path::PathBuf> {
    if let Some(p) = &config.state_file {
        return Some(p.clone());
    }
    let path = std::path::Path::new(config_path?);
    let stem = path.file_stem()?.to_string_lossy().into_owned();
    Some(path.with_file_name(format!("{stem}.state.json")))
}

fn serve(config: control::model::Config, config_path: Option<&str>, args: &Args) -> ExitCode {
    let set = block_signals();
    // The binary at our path now, resolved before anything can replace it:
    // an upgrade starts what is there then (a package upgrade takes effect).
    let exe = std::env::current_exe().ok().map(|p| {
        let s = p.to_string_lossy();
        std::path::PathBuf::from(s.strip_suffix(" (deleted)").unwrap_or(&s))
    });
    // Started by an upgrade: the old process's sockets, and where to say ready.
    let (inherited, handover) = match ringway::upgrade::inherit() {
        None => (Default::default(), None),
        Some(Ok((sockets, stream))) => (sockets, Some(stream)),
        Some(Err(e)) => {
            eprintln!("ringway: upgrade handover failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pid_file = config.pid_file.clone();
    let opts = runtime::Options {
        workers: args.workers,
        driver: args.driver,
        state_file: state_file_for(&config, config_path),
        reset_state: args.reset_state,
        inherited,
    };
    let running = match runtime::start_with(config, opts) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ringway: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = &pid_file {
        if let Err(e) = write_pid(path) {
            tracing::warn!(path = %path.display(), error = %e, "pid file not written");
        }
    }
    let proxy: Vec<String> = running.proxy_addrs.iter().map(ToString::to_string).collect();
    let admin = running.admin_addr.map_or("-".to_string(), |a| a.to_string());
    let tls: Vec<String> = running.tls_addrs.iter().map(ToString::to_string).collect();
    let tls = if tls.is_empty() { "-".to_string() } else { tls.join(",") };
    println!("listening proxy={} admin={} tls={}", proxy.join(","), admin, tls);
    if let Some(stream) = handover {
        tracing::info!(pid = std::process::id(), "upgrade: serving on the handed-over sockets");
        ringway::upgrade::ready(stream);
    }
    loop {
        match wait_for_signal(&set) {
            libc::SIGHUP => match config_path.map(load) {
                Some(Ok(c)) => {
                    tracing::info!("SIGHUP: applying the config file's routes");
                    let _ = running.control.send(ringway::controller::ControlCmd::Reload(c.routes));
                }
                Some(Err(e)) => tracing::warn!("SIGHUP: config not applied: {e}"),
                None => tracing::info!("SIGHUP: no config file to reload"),
            },
            libc::SIGUSR2 => {
                if upgrade(&running, exe.as_deref()) {
                    running.shutdown();
                    return ExitCode::SUCCESS;
                }
            }
            sig => {
                tracing::info!(signal = sig, "shutting down");
                running.shutdown();
                return ExitCode::SUCCESS;
            }
        }
    }
}

/// SIGUSR2: hands the sockets to the binary at our path; true once it is
/// ready (this process then drains), false when it failed (we keep serving).
fn upgrade(running: &runtime::Running, exe: Option<&std::path::Path>) -> bool {
    let Some(exe) = exe else {
        tracing::error!("upgrade: this process does not know its own binary");
        return false;
    };
    let freeze = |on: bool| {
        let (done, wait) = crossbeam_channel::bounded(1);
        let sent = running.control.send(ringway::controller::ControlCmd::Freeze { on, done }).is_ok();
        sent && wait.recv_timeout(std::time::Duration::from_secs(15)).is_ok()
    };
    if !freeze(true) {
        tracing::error!("upgrade: the control thread did not pause changes; not upgrading");
        return false;
    }
    // The same arguments, less `--reset-state`: the new process must
    // resume from the state file, not drop what the API changed.
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--reset-state").collect();
    tracing::info!(binary = %exe.display(), "upgrade: starting the new process");
    match ringway::upgrade::hand_over(exe, &args, &running.sockets) {
        Ok(pid) => {
            tracing::info!(new_pid = pid, "upgrade: the new process is ready; this one drains and exits");
            true
        }
        Err(e) => {
            tracing::error!("upgrade failed, this process keeps serving: {e}");
            freeze(false);
            false
        }
    }
}

/// Writes our pid to `path` (a temporary file renamed over it).
fn write_pid(path: &std::path::Path) -> std::io::Result<()> {
    let tmp = path.with_extension("pid.tmp");
    std::fs::write(&tmp, format!("{}\n", std::process::id()))?;
    std::fs::rename(&tmp, path)
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let cmd = argv.get(1).map(String::as_str).unwrap_or("help");
    if matches!(cmd, "--version" | "-V" | "version") {
        println!("ringway {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if cmd == "ctl" {
        return match ringway::ctl::run(argv.get(2..).unwrap_or(&[])) {
            Ok(out) => {
                print!("{out}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ringway ctl: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match parse_args(argv.get(2..).unwrap_or(&[])) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ringway: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match cmd {
        "run" if args.help => print!("{RUN_HELP}"),
        "check" if args.help => print!("{CHECK_HELP}"),
        "demo" if args.help => print!("{DEMO_HELP}"),
        "run" => {
            init_tracing();
            let Some(path) = args.config.clone() else {
                eprintln!("ringway run: --config FILE is required\n\n{RUN_HELP}");
                return ExitCode::from(2);
            };
            return match load(&path) {
                Ok(c) => serve(c, Some(&path), &args),
                Err(e) => {
                    eprintln!("ringway: invalid config {path}:\n{e}");
                    ExitCode::FAILURE
                }
            };
        }
        "check" => {
            let Some(path) = args.config else {
                eprintln!("ringway check: --config FILE is required\n\n{CHECK_HELP}");
                return ExitCode::from(2);
            };
            return match load(&path) {
                Ok(c) => {
                    println!("{path}: ok ({} routes)", c.routes.len());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            };
        }
        "demo" => {
            init_tracing();
            let listen = args.listen.clone().unwrap_or_else(|| "127.0.0.1:8080".to_string());
            let admin = args.admin.clone().unwrap_or_else(|| "127.0.0.1:9901".to_string());
            return match ringway::demo::config(&listen, &admin) {
                Ok(c) => serve(c, None, &args),
                Err(e) => {
                    eprintln!("ringway demo: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        "help" | "--help" | "-h" => print!("{HELP}"),
        other => {
            eprintln!("ringway: unknown command {other:?}\n\n{HELP}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}
