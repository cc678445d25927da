//! The Rust client of a prochub server, for editor extensions and the CLI.
//! Typed errors only ([`ClientError`]): no printing, no clap, no anyhow.
//! Built alone with `default-features = false, features = ["client"]`.
//!
//! # Layout
//! * [`transport`]: [`Client`], a server's address, token and connection
//!   pool (hyper-util), and how a request goes out and comes back.
//! * [`api`]: typed calls for every endpoint, as methods of [`Client`];
//!   those on stored output (idempotent appends with `?at=N`, history
//!   reads with filters) are in [`output`].
//! * [`url`], `link`: server addresses and query strings; the next-page
//!   cursor of a `Link` header.
//! * [`error`]: [`ClientError`], and the mapping of error answers to it.
//! * [`sse`]: a WHATWG-conformant Server-Sent Events parser.
//! * [`resumable`]: an SSE request that reopens itself with `Last-Event-ID`
//!   ([`ReconnectPolicy`]), under [`follower`] ([`Follower`], a process's
//!   output as [`OutputEvent`]s) and [`event_stream`] ([`EventStream`],
//!   lifecycle events).
//! * [`identity`]: [`WorkspaceIdentity`], a workspace id derived from the
//!   folder path.
//! * [`workspace`]: [`WorkspaceClient`] for editor extensions:
//!   submit/update/remove that fall back to the on-disk offline queue
//!   ([`queue`]).
//! * [`discovery`]: the default data folder and its `server.json`.

pub mod api;
pub mod discovery;
pub mod error;
pub mod event_stream;
pub mod follower;
pub mod identity;
mod link;
pub mod output;
pub mod queue;
pub mod resumable;
pub mod sse;
pub mod transport;
pub mod url;
pub mod workspace;

pub use api::Health;
pub use discovery::{default_data_dir, read_server_info, server_url};
pub use error::ClientError;
pub use event_stream::{Event, EventStream};
pub use follower::{Follower, OutputEvent};
pub use identity::WorkspaceIdentity;
pub use output::{OutputRead, OutputText};
pub use queue::{OfflineQueue, QueuedOp};
pub use resumable::ReconnectPolicy;
pub use transport::Client;
pub use url::DEFAULT_URL;
pub use workspace::{Delivery, FlushReport, WorkspaceClient};
