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
    let bytes = serde_json::to_vec_pretty(&state.to_json()).map_err(io::Error::other)?;
    let tmp = temp_path(path);
    {
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&bytes)?;
        f.write_all(b"\n")?;
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
