//! prochub: a process hub. Editor extensions, CI scripts and REST clients
//! register long-running processes, push their output, and anyone can
//! follow that output live over Server-Sent Events or watch processes come
//! and go over a WebSocket.
//!
//! # Layout
//! Lowest layer first; arrows only point down.
//! * [`sync`], [`durable`], [`percent`], [`utf8`]: small shared mechanisms
//!   (poison-free locking, the one durable atomic write, URL component
//!   encoding, incremental UTF-8 decoding).
//! * [`metrics`]: the process's Prometheus metrics; the store and the
//!   server record into it, `GET /metrics` encodes it.
//! * [`model`]: records, the status machine, validated ids, patches,
//!   events, query shapes. serde only, no I/O.
//! * [`store`]: the store contract and `FileProcessStore`: records on disk,
//!   the in-memory index, output logs, per-process emitters, lifecycle
//!   events, retention.
//! * [`runner`]: server-run commands: spawn, pump pipes, signals, cancel.
//! * [`server`]: the hyper server: listener and shutdown, router, handlers,
//!   SSE, WebSocket, auth, errors.
//! * [`client`]: the Rust client library for editor extensions: HTTP calls,
//!   SSE, reconnecting streams, workspace identity, offline queue.
//! * [`cli`]: clap definitions and every `prochub …` command: argument
//!   parsing, printing, colours, exit codes.
//!
//! # Features
//! * `client`: [`client`] (and the shared modules). What an editor
//!   extension depends on: `default-features = false, features = ["client"]`
//!   compiles neither the server nor clap.
//! * `server`: [`store`], [`runner`], [`server`].
//! * `cli` (default): both, plus [`cli`] and the `prochub` binary.

#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "client")]
pub mod client;
pub mod durable;
#[cfg(feature = "server")]
pub mod metrics;
pub mod model;
pub mod percent;
#[cfg(feature = "server")]
pub mod runner;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "server")]
pub mod store;
pub mod sync;
pub mod utf8;
