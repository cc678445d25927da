//! The one integration-test binary: real stores in real temporary folders,
//! a real server on 127.0.0.1:0, real HTTP, SSE and WebSocket clients.

mod client;
mod helper;
mod runner;
mod server;
mod store;
