//! The Rust client of a prochub server, used by the CLI and by editor
//! extensions.
//!
//! # Layout
//! * [`api`]: [`Client`], typed calls for every endpoint (hyper-util).
//! * [`sse`]: a WHATWG-conformant Server-Sent Events parser.
//! * [`stream`]: [`Follower`] and [`EventStream`], SSE streams that
//!   reconnect with `Last-Event-ID` by themselves.
//! * [`workspace`]: [`WorkspaceClient`] for editor extensions: a workspace
//!   identity derived from the folder path, submit/update/remove, and the
//!   on-disk offline queue ([`queue`]).
//! * [`error`]: the error type, [`ClientError`].

pub mod api;
pub mod error;
pub mod queue;
pub mod sse;
pub mod stream;
pub mod workspace;

pub use api::{Client, Health, ListParams, OutputRange, ProcessPage};
pub use error::ClientError;
pub use queue::{OfflineQueue, QueuedOp};
pub use stream::{Event, EventStream, FollowEvent, Follower, ReconnectPolicy};
pub use workspace::{Delivery, FlushReport, WorkspaceClient, WorkspaceIdentity};

/// The default data folder: `$XDG_DATA_HOME/prochub` (normally
/// `~/.local/share/prochub`), where `server.json` names the running server
/// and editor extensions keep their offline queues.
pub fn default_data_dir() -> std::path::PathBuf {
    dirs::data_dir()
        .unwrap_or_else(|| std::path::PathBuf::from("."))
        .join("prochub")
}
