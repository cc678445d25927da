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
//! * [`cli`]: clap definitions and every `prochub …` command.

pub mod cli;
pub mod client;
pub mod durable;
pub mod metrics;
pub mod model;
pub mod percent;
pub mod runner;
pub mod server;
pub mod store;
pub mod sync;
pub mod utf8;
