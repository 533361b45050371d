//! The state file and its change log: what the API can change, kept
//! durable without rewriting everything on every change.
//!
//! - The state file (`state.json`) is a full snapshot, written atomically
//!   (temporary file, fsync, rename, fsync of the directory) with mode
//!   0600, so a crash at any moment leaves the old or the new snapshot.
//! - The change log beside it (`state.json.log`, mode 0600) holds one JSON
//!   record per change since that snapshot (`control::state::log_record`:
//!   the generation and the new value of the one thing changed), each
//!   appended and fdatasync'd before the change is answered: a write costs
//!   one small append, whatever the number of routes.
//! - Compaction: every `COMPACT_EVERY` records (and for a change that
//!   touches everything, or the first change of a run that did not start
//!   from the snapshot) the persister writes a new snapshot, then empties
//!   the log. Records at or below the snapshot's generation are skipped on
//!   replay, so a crash between the two loses nothing.
//! - Start: the snapshot, then the log replayed in order. A torn last
//!   record (a crash mid-append: that change was never answered) is cut
//!   off with a warning; anything else unreadable stops the start and is
//!   left alone.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use control::model::RouteDefaults;
use control::state::State;

/// Records between snapshots.
pub const COMPACT_EVERY: usize = 1000;

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into());
    path.with_file_name(format!(".{name}.tmp"))
}

/// Where the change log of state file `path` lives.
pub fn log_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into());
    path.with_file_name(format!("{name}.log"))
}

/// Writes `state` to `path` atomically.
pub fn write(path: &Path, state: &State) -> io::Result<()> {
    write_atomically(path, |f| encode_to(state, f))
}

/// Writes what the state file holds for `state` to `out`: the same JSON
/// object as `State::to_json`, one route per line, encoded route by route
/// (10,000 routes never exist as one JSON tree in memory).
pub fn encode_to(state: &State, out: &mut impl Write) -> io::Result<()> {
    let mut head = state.to_json_without_routes();
    let tail = match head.as_object_mut() {
        Some(m) => {
            m.remove("routes");
            serde_json::to_string(m).map_err(io::Error::other)?
        }
        None => return Err(io::Error::other("state JSON is not an object")),
    };
    // `{"routes":[` + routes + `],` + the other fields (sorted keys) + `}`.
    out.write_all(b"{\"routes\": [\n")?;
    for (i, r) in state.routes.iter().enumerate() {
        if i > 0 {
            out.write_all(b",\n")?;
        }
        serde_json::to_writer(&mut *out, &control::state::route_json(r)).map_err(io::Error::other)?;
    }
    out.write_all(b"\n],\n")?;
    out.write_all(&tail.as_bytes()[1..])?;
    out.write_all(b"\n")
}

/// One change-log line for `record`.
pub fn encode_record(record: &serde_json::Value) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(record).map_err(io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// Work for the persister thread.
pub enum Job {
    /// Write this state as the snapshot and empty the log; answer.
    Snapshot(Box<State>),
    /// Append this record (from `encode_record`) durably; answer.
    Append(Vec<u8>),
    /// Write this state as the snapshot and empty the log, in the
    /// background (no answer: a failure leaves the log to grow).
    Compact(Box<State>),
}

/// The persister thread (the control side's blocking helper for the
/// disk): does each job in order, answering `Snapshot` and `Append` with
/// the outcome, so the control thread never waits on an fsync. `based`:
/// the files on disk hold this run's state (it resumed from them); until
/// a snapshot of this run is written, appends are refused.
pub fn persister(
    path: PathBuf,
    based: bool,
    jobs: crossbeam_channel::Receiver<Job>,
    done: crossbeam_channel::Sender<io::Result<()>>,
) {
    let mut log = Log { path: log_path(&path), file: None, based };
    for job in jobs {
        let result = match job {
            Job::Snapshot(state) => snapshot(&path, &state, &mut log),
            Job::Append(line) => log.append(&line),
            Job::Compact(state) => {
                if let Err(e) = snapshot(&path, &state, &mut log) {
                    tracing::warn!(path = %path.display(), error = %e, "state file snapshot failed");
                }
                continue;
            }
        };
        if done.send(result).is_err() {
            return;
        }
    }
}

fn snapshot(path: &Path, state: &State, log: &mut Log) -> io::Result<()> {
    write(path, state)?;
    // From here the log may follow this run's state, even if emptying it
    // fails (its records are then all at or below the snapshot's
    // generation, and skipped on replay).
    log.based = true;
    log.clear()
}

/// The change log, open for appending.
struct Log {
    path: PathBuf,
    file: Option<File>,
    /// The snapshot on disk is of this run's state.
    based: bool,
}

impl Log {
    fn open(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            let f = OpenOptions::new().append(true).create(true).mode(0o600).open(&self.path)?;
            self.file = Some(f);
        }
        self.file.as_mut().ok_or_else(|| io::Error::other("change log not open"))
    }

    /// Appends `line` durably; on failure the log is cut back to where it
    /// was, so no torn record is left before later ones.
    fn append(&mut self, line: &[u8]) -> io::Result<()> {
        if !self.based {
            return Err(io::Error::other("no snapshot of this run's state to append to (its write failed)"));
        }
        let f = self.open()?;
        let before = f.metadata()?.len();
        let written = f.write_all(line).and_then(|_| f.sync_data());
        if written.is_err() {
            let _ = f.set_len(before);
            self.file = None;
        }
        written
    }

    /// Empties the log (its records are in the snapshot now).
    fn clear(&mut self) -> io::Result<()> {
        let f = self.open()?;
        f.set_len(0)?;
        f.sync_all()
    }
}

/// Writes a file through `fill` atomically (temporary file, fsync, rename,
/// fsync of the directory).
fn write_atomically(path: &Path, fill: impl FnOnce(&mut io::BufWriter<File>) -> io::Result<()>) -> io::Result<()> {
    let tmp = temp_path(path);
    {
        let f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        let mut w = io::BufWriter::with_capacity(64 * 1024, f);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// The state file's text: `Ok(None)` when there is none; `Err` when it
/// exists but cannot be read (the caller refuses to start).
pub fn read_text(path: &Path) -> Result<Option<String>, String> {
    match fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// The state in a state file's `text` (from `read_text`), its change log
/// replayed: `Err` when either cannot be used (the caller refuses to
/// start, and never overwrites them). A torn last log record is cut off.
pub fn parse(path: &Path, text: String, defaults: &RouteDefaults) -> Result<State, String> {
    let mut state =
        State::from_text(&text, defaults).map_err(|e| format!("{}: corrupt state file: {e}", path.display()))?;
    drop(text);
    replay_log(&log_path(path), &mut state, defaults)?;
    Ok(state)
}

fn replay_log(path: &Path, state: &mut State, defaults: &RouteDefaults) -> Result<(), String> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let mut good = 0;
    let mut records = 0;
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        // Only the last line can lack its newline: a torn record.
        if !line.ends_with(b"\n") {
            break;
        }
        let record: serde_json::Value = serde_json::from_slice(line)
            .map_err(|e| format!("{}: corrupt record {}: {e}", path.display(), records + 1))?;
        control::state::replay(state, &record, defaults)
            .map_err(|e| format!("{}: record {}: {e}", path.display(), records + 1))?;
        good += line.len();
        records += 1;
    }
    if good < bytes.len() {
        tracing::warn!(path = %path.display(), bytes = bytes.len() - good, "cutting off a torn last change-log record (a crash mid-write; that change was never answered)");
        let f = OpenOptions::new().write(true).open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        f.set_len(good as u64).and_then(|_| f.sync_all()).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    if records > 0 {
        tracing::info!(records, generation = state.generation, "replayed the change log");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `read_text` then `parse`, as a start does: `Ok(None)` without a file.
    fn read(path: &Path, defaults: &RouteDefaults) -> Result<Option<State>, String> {
        read_text(path)?.map(|text| parse(path, text, defaults)).transpose()
    }

    #[test]
    fn write_then_read() {
        let dir = std::env::temp_dir().join(format!("ringway-statefile-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("s.json");
        let config = control::model::parse_config(
            r#"{"routes":[{"vHost":"a.com","backends":[{"hostname":"127.0.0.1","port":1}]}]}"#,
        )
        .expect("valid");
        let defaults = RouteDefaults::of(&config);
        let state = State::new(config.routes.clone());
        write(&path, &state).expect("write");
        let mode = fs::metadata(&path).expect("meta").permissions();
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777, 0o600);
        assert_eq!(read(&path, &defaults).expect("read"), Some(state));
        fs::write(&path, b"{not json").expect("corrupt");
        assert!(read(&path, &defaults).is_err());
        assert_eq!(read(&dir.join("missing.json"), &defaults).expect("absent"), None);
        let _ = fs::remove_dir_all(&dir);
    }

    /// Three changes logged after a snapshot; the log cut at every byte
    /// offset of its last record recovers the first two (and the cut-off
    /// bytes are gone, so later appends follow whole records); the whole
    /// log recovers all three; a broken record before the last refuses.
    #[test]
    fn a_torn_last_record_recovers_the_last_complete_change() {
        use control::state::Change;
        let dir = std::env::temp_dir().join(format!("ringway-changelog-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("s.json");
        let config = control::model::parse_config(
            r#"{"routes":[{"vHost":"a.com","backends":[{"id":"x","hostname":"127.0.0.1","port":1}]}]}"#,
        )
        .expect("valid");
        let defaults = RouteDefaults::of(&config);
        let mut state = State::new(config.routes.clone());
        let (tx, rx) = crossbeam_channel::unbounded();
        let (done_tx, done) = crossbeam_channel::unbounded();
        let writer = {
            let path = path.clone();
            std::thread::spawn(move || persister(path, false, rx, done_tx))
        };
        tx.send(Job::Snapshot(Box::new(state.clone()))).expect("send");
        done.recv().expect("answer").expect("snapshot");
        let mut states = vec![state.clone()];
        let mut b = config.routes[0].pool.backends[0].clone();
        b.id = "y".into();
        let changes = [
            Change::AddBackend { key: "a.com".into(), backend: b },
            Change::Maintenance { key: "a.com".into(), id: "y".into(), dead: true },
            Change::DeleteBackend { key: "a.com".into(), id: "x".into() },
        ];
        for c in &changes {
            state.apply(c).expect("applies");
            let line = encode_record(&control::state::log_record(c, &state).expect("logged")).expect("line");
            tx.send(Job::Append(line)).expect("send");
            done.recv().expect("answer").expect("append");
            states.push(state.clone());
        }
        drop(tx);
        writer.join().expect("persister");
        let log = fs::read(log_path(&path)).expect("log");
        let last_start = log[..log.len() - 1].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        assert_eq!(read(&path, &defaults).expect("whole log"), Some(states[3].clone()));
        for cut in last_start..log.len() {
            fs::write(log_path(&path), &log[..cut]).expect("cut");
            assert_eq!(read(&path, &defaults).expect("torn"), Some(states[2].clone()), "cut at {cut}");
            assert_eq!(fs::read(log_path(&path)).expect("log").len(), last_start, "torn bytes cut off");
        }
        // A broken record before the last: refuse, change nothing.
        let mut broken = log.clone();
        broken[3] = b'#';
        fs::write(log_path(&path), &broken).expect("break");
        assert!(read(&path, &defaults).is_err());
        assert_eq!(fs::read(log_path(&path)).expect("log"), broken, "left alone");
        let _ = fs::remove_dir_all(&dir);
    }
}
