//! Zero-downtime binary upgrade (SIGUSR2, `ringway ctl upgrade`), as
//! HAProxy's `-x`, Envoy's hot restart and sozu do it: the running process
//! starts the binary now at its own path with the same arguments and hands
//! it every listening socket over a Unix socket (SCM_RIGHTS). The new
//! process serves on those very sockets (their accept queues included, so
//! no connection waiting in one is lost), takes over the state, and says
//! `ready`; only then does the old one stop accepting and drain. If the new
//! one fails or is not ready within `READY_TIMEOUT`, the old one keeps
//! serving and logs why.
//!
//! Wire format, old → new: one message per batch of descriptors, each a
//! JSON line `{"sockets": [{"kind", "configured", "bound"}, …]}` carrying
//! that many descriptors; a final `{"done": true}`. New → old: `ready\n`.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The environment variable naming the new process's end of the socket.
pub const ENV: &str = "RINGWAY_UPGRADE_FD";
/// How long the old process waits for the new one to be ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Descriptors per message (the kernel takes at most 253).
const BATCH: usize = 200;

/// Which listener a socket is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A plain proxy listener.
    Proxy,
    /// A TLS listener.
    Tls,
    /// The admin listener.
    Admin,
}

/// A listening socket as handed over: what it is and where it listens.
#[derive(Debug)]
pub struct Listener {
    /// Which listener.
    pub kind: Kind,
    /// The address as the config file gives it (`127.0.0.1:0` included):
    /// how the new process matches it to its own config.
    pub configured: SocketAddr,
    /// The socket.
    pub fd: OwnedFd,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    kind: Kind,
    configured: SocketAddr,
}

/// The listening sockets this process serves on (duplicates of the
/// workers' own), kept for a handover.
#[derive(Debug, Default)]
pub struct Sockets {
    /// Every one of them.
    pub list: Vec<Listener>,
}

impl Sockets {
    /// Takes a duplicate of `l` (the socket stays open while either lives).
    pub fn keep(&mut self, kind: Kind, configured: SocketAddr, l: &std::net::TcpListener) -> std::io::Result<()> {
        let fd = l.try_clone()?.into();
        self.list.push(Listener { kind, configured, fd });
        Ok(())
    }

    /// The inherited sockets of `kind` configured as `addr` — or bound to
    /// it: a config that now names the port `:0` was given (as one pinned
    /// for a restart would) keeps those very sockets rather than binding
    /// new ones beside them while the old ones, no longer accepting, reset
    /// whatever the kernel queued on them.
    pub fn take(&mut self, kind: Kind, addr: SocketAddr) -> Vec<std::net::TcpListener> {
        let bound_to = |l: &Listener| socket2::SockRef::from(&l.fd).local_addr().ok().and_then(|a| a.as_socket());
        let (mine, rest): (Vec<Listener>, Vec<Listener>) = std::mem::take(&mut self.list)
            .into_iter()
            .partition(|l| l.kind == kind && (l.configured == addr || bound_to(l) == Some(addr)));
        self.list = rest;
        mine.into_iter().map(|l| std::net::TcpListener::from(l.fd)).collect()
    }
}

/// The new process's side: the sockets the old one handed over, and the
/// stream to say `ready` on. `None` when this is not an upgrade.
pub fn inherit() -> Option<Result<(Sockets, UnixStream), String>> {
    let fd: RawFd = std::env::var(ENV).ok()?.parse().ok()?;
    std::env::remove_var(ENV);
    // SAFETY: the old process put this descriptor here for us alone.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    Some(receive(&stream).map(|s| (s, stream)))
}

fn receive(stream: &UnixStream) -> Result<Sockets, String> {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let mut sockets = Sockets::default();
    loop {
        let (text, fds) = recv_with_fds(stream).map_err(|e| format!("receiving the sockets: {e}"))?;
        let v: serde_json::Value = serde_json::from_slice(&text).map_err(|e| format!("the handover: {e}"))?;
        if v.get("done").is_some() {
            break;
        }
        let entries: Vec<Entry> = serde_json::from_value(v["sockets"].clone()).map_err(|e| e.to_string())?;
        if entries.len() != fds.len() {
            return Err(format!("{} sockets described, {} received", entries.len(), fds.len()));
        }
        for (e, fd) in entries.into_iter().zip(fds) {
            sockets.list.push(Listener { kind: e.kind, configured: e.configured, fd });
        }
    }
    let _ = stream.set_read_timeout(None);
    Ok(sockets)
}

/// The new process is serving: tells the old one.
pub fn ready(mut stream: UnixStream) {
    if let Err(e) = stream.write_all(b"ready\n") {
        tracing::warn!(error = %e, "could not tell the old process we are ready");
    }
}

/// The old process's side: starts `exe` with `args`, hands it `sockets`,
/// and waits (bounded) for it to say `ready`. On failure the child is
/// stopped and the reason returned; this process keeps serving.
pub fn hand_over(exe: &std::path::Path, args: &[String], sockets: &Sockets) -> Result<u32, String> {
    let (ours, theirs) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    // The child's end must survive exec (Rust opens it close-on-exec).
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let fd = theirs.as_raw_fd();
        let flags = libc::fcntl(fd, libc::F_GETFD);
        libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
    }
    let mut child: Child = Command::new(exe)
        .args(args)
        .env(ENV, theirs.as_raw_fd().to_string())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", exe.display()))?;
    drop(theirs);
    let pid = child.id();
    // A binary that does not speak this handover must not hang us.
    let _ = ours.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = ours.set_write_timeout(Some(Duration::from_secs(10)));
    let outcome = send_all(&ours, sockets)
        .map_err(|e| exited(&mut child).unwrap_or(e))
        .and_then(|()| wait_ready(&ours, &mut child));
    if let Err(e) = &outcome {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e.clone());
    }
    // The new process is on its own now (reaped by init once we exit).
    std::mem::forget(child);
    Ok(pid)
}

/// "The new process exited …" when it did (within a moment): the reason an
/// operator wants, rather than the broken pipe it left behind.
fn exited(child: &mut Child) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(format!("the new process exited before it was ready ({status}; its stderr says why)"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

fn send_all(stream: &UnixStream, sockets: &Sockets) -> Result<(), String> {
    for batch in sockets.list.chunks(BATCH) {
        let entries: Vec<Entry> = batch.iter().map(|l| Entry { kind: l.kind, configured: l.configured }).collect();
        let text = serde_json::to_vec(&serde_json::json!({"sockets": entries})).map_err(|e| e.to_string())?;
        let fds: Vec<RawFd> = batch.iter().map(|l| l.fd.as_raw_fd()).collect();
        send_with_fds(stream, &text, &fds).map_err(|e| format!("sending the sockets: {e}"))?;
    }
    send_with_fds(stream, br#"{"done": true}"#, &[]).map_err(|e| format!("sending the sockets: {e}"))
}

fn wait_ready(stream: &UnixStream, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut reader = BufReader::new(stream.try_clone().map_err(|e| e.to_string())?);
    let mut line = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("the new process was not ready within {} s", READY_TIMEOUT.as_secs()));
        }
        let _ = stream.set_read_timeout(Some(left.min(Duration::from_millis(200))));
        match reader.read_line(&mut line) {
            Ok(0) => {
                return Err(exited(child).unwrap_or_else(|| "the new process closed the handover".to_string()));
            }
            Ok(_) if line.trim() == "ready" => return Ok(()),
            Ok(_) => return Err(format!("unexpected word from the new process: {line:?}")),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {
                if let Ok(Some(status)) = child.try_wait() {
                    return Err(format!("the new process exited before it was ready ({status}; its stderr says why)"));
                }
            }
            Err(e) => return Err(format!("waiting for the new process: {e}")),
        }
    }
}

/// One message with descriptors attached (SCM_RIGHTS).
fn send_with_fds(stream: &UnixStream, data: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut libc::c_void, iov_len: data.len() };
    let fd_bytes = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(fd_bytes as u32) } as usize;
    let mut control = vec![0u8; space.max(1)];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer is CMSG_SPACE(fd_bytes) long, so the
        // first header and its data fit.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(fd_bytes as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr() as *const u8, libc::CMSG_DATA(cmsg), fd_bytes);
        }
    }
    // SAFETY: msg points at live buffers; a stream socket we own.
    let n = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n as usize != data.len() {
        return Err(std::io::Error::other("short write"));
    }
    // One message per read on the other side: wait for its ack.
    let mut ack = [0u8; 1];
    let mut r = stream;
    std::io::Read::read_exact(&mut r, &mut ack)
}

/// Receives one message and its descriptors, and acks it.
fn recv_with_fds(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Vec<OwnedFd>)> {
    let mut data = vec![0u8; 64 * 1024];
    let mut iov = libc::iovec { iov_base: data.as_mut_ptr() as *mut libc::c_void, iov_len: data.len() };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE((BATCH * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: a zeroed msghdr is valid; every pointer set below outlives the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    // SAFETY: msg points at live buffers; MSG_CMSG_CLOEXEC keeps the
    // received descriptors from leaking into anything we start.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n == 0 {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "the old process hung up"));
    }
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote into `control`.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = bytes / std::mem::size_of::<RawFd>();
                let base = libc::CMSG_DATA(cmsg) as *const RawFd;
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(base.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(std::io::Error::other("descriptors were cut off"));
    }
    data.truncate(n as usize);
    let mut w = stream;
    w.write_all(b"k")?;
    Ok((data, fds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_cross_a_unix_socket_and_still_accept() {
        let (a, b) = UnixStream::pair().expect("pair");
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let configured: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let mut mine = Sockets::default();
        mine.keep(Kind::Proxy, configured, &l).expect("dup");
        drop(l);
        let sender = std::thread::spawn(move || send_all(&a, &mine));
        let mut got = receive(&b).expect("received");
        sender.join().expect("thread").expect("sent");
        assert!(got.take(Kind::Tls, configured).is_empty());
        let proxies = got.take(Kind::Proxy, configured);
        assert_eq!(proxies.len(), 1);
        assert_eq!(proxies[0].local_addr().expect("addr"), addr, "the very same socket");
        let c = std::net::TcpStream::connect(addr).expect("connect");
        let (s, _) = proxies[0].accept().expect("accept on the received socket");
        assert_eq!(s.peer_addr().expect("peer"), c.local_addr().expect("local"));
    }
}
