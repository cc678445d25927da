//! Finding the server: the default data folder, and the `server.json` in
//! it that `prochub serve` writes ([`ServerInfo`], SPEC section 8).

use std::path::{Path, PathBuf};

use super::error::ClientError;
use super::url::DEFAULT_URL;
use crate::model::{SERVER_JSON, ServerInfo};

/// The default data folder: `$XDG_DATA_HOME/prochub` (normally
/// `~/.local/share/prochub`), where `server.json` names the running server
/// and editor extensions keep their offline queues. None when the system
/// names no data folder for this user (no `$HOME`); each caller decides
/// what that means (`serve` asks for `--data`).
pub fn default_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("prochub"))
}

/// `DIR/server.json`, or None when no server announced itself there.
pub fn read_server_info(dir: &Path) -> Result<Option<ServerInfo>, ClientError> {
    let path = dir.join(SERVER_JSON);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ClientError::io("read", path)(e)),
    };
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|e| ClientError::io("read the server address in", path)(e.into()))
}

/// Where the server of data folder `dir` (default: [`default_data_dir`])
/// listens: the address in its `server.json`, else [`DEFAULT_URL`].
pub fn server_url(dir: Option<&Path>) -> Result<String, ClientError> {
    let dir = match dir {
        Some(d) => d.to_owned(),
        None => match default_data_dir() {
            Some(d) => d,
            None => return Ok(DEFAULT_URL.to_owned()),
        },
    };
    Ok(read_server_info(&dir)?.map_or_else(|| DEFAULT_URL.to_owned(), |s| s.addr))
}
