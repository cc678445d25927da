//! prochub: a process hub. Editor extensions, CI scripts and REST clients
//! register long-running processes, push their output, and anyone can
//! follow that output live over Server-Sent Events or watch processes come
//! and go over a WebSocket.
//!
//! # Layout
//! Lowest layer first; arrows only point down.
//! * [`model`]: records, the status machine, ids, events. serde only.
//! * [`store`]: `FileProcessStore`: records on disk, the in-memory index,
//!   output logs, per-process emitters, lifecycle events, retention.
//! * [`utf8`]: incremental UTF-8 decoding shared by the runner and the client.
//! * [`runner`]: server-run commands (spawn, pipe, cancel).
//! * [`server`]: the hyper server: listener and shutdown, router, handlers,
//!   SSE, WebSocket, auth, errors.
//! * [`client`]: the Rust client (CLI and editor extensions, offline queue).
//! * [`cli`]: clap definitions of the binary.

pub mod cli;
pub mod client;
pub mod model;
pub mod runner;
pub mod server;
pub mod store;
pub mod utf8;
