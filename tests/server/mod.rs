//! Server tests: a real server on 127.0.0.1:0 (in-process, or the real
//! binary where a separate process matters), real HTTP, SSE and WebSocket
//! clients.

mod backpressure;
mod browser;
mod errors;
mod events;
mod faults;
mod follow;
mod hostile;
mod ops;
mod output_history;
mod process;
mod query;
mod rest;
mod security;
mod shutdown;
