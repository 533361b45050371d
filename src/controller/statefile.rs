//! The state file: what the API can change, written atomically (temporary
//! file, fsync, rename, fsync of the directory) with mode 0600, so a crash
//! at any moment leaves the old or the new state, never a torn file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use control::model::RouteDefaults;
use control::state::State;

fn temp_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "state".into());
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `state` to `path` atomically.
pub fn write(path: &Path, state: &State) -> io::Result<()> {
    write_bytes(path, &encode(state)?)
}

/// What the state file holds for `state`.
pub fn encode(state: &State) -> io::Result<Vec<u8>> {
    let mut bytes = serde_json::to_vec_pretty(&state.to_json()).map_err(io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes)
}

/// A state file write for the persister thread.
pub struct Job {
    /// Where.
    pub path: PathBuf,
    /// What (from `encode`).
    pub bytes: Vec<u8>,
}

/// The persister thread (the control side's blocking helper for the
/// disk): writes each job atomically and durably, answers with the
/// outcome, so the control thread never waits on an fsync.
pub fn persister(jobs: crossbeam_channel::Receiver<Job>, done: crossbeam_channel::Sender<io::Result<()>>) {
    for job in jobs {
        if done.send(write_bytes(&job.path, &job.bytes)).is_err() {
            return;
        }
    }
}

/// Writes `bytes` to `path` atomically: a crash at any moment leaves the
/// old or the new file.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Reads the state file: `Ok(None)` when there is none; `Err` when it
/// exists but cannot be used (the caller refuses to start, and never
/// overwrites it).
pub fn read(path: &Path, defaults: &RouteDefaults) -> Result<Option<State>, String> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: corrupt state file: {e}", path.display()))?;
    State::from_json(&v, defaults).map(Some).map_err(|e| format!("{}: corrupt state file: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
