//! `DIR/server.json`: which server owns a data folder, for clients that
//! look it up and for the lock-owner message of a second server.

use serde::{Deserialize, Serialize};

use super::time::{Timestamp, ts};

/// The file's name inside the data folder.
pub const SERVER_JSON: &str = "server.json";

/// Contents of `DIR/server.json`: `{pid, addr, started_at}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    pub pid: u32,
    /// `HOST:PORT` the server listens on.
    pub addr: String,
    /// Absent in files written by hand or by older versions.
    #[serde(with = "ts::opt", default)]
    pub started_at: Option<Timestamp>,
}

impl ServerInfo {
    /// The record for this process, listening on `addr`, started now.
    pub fn current(addr: String) -> ServerInfo {
        ServerInfo {
            pid: std::process::id(),
            addr,
            started_at: Some(super::now()),
        }
    }
}
