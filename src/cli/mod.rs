//! The `prochub` command line: clap definitions ([`args`]), every client
//! command ([`commands`]), how they print ([`print`]), and `prochub serve`
//! ([`serve`]). `main.rs` only parses, sets up tracing and dispatches here.
//! This is the top layer: it uses the client library and, for `serve`, the
//! server; nothing below imports from it.

pub mod args;
pub mod commands;
pub mod print;
pub mod serve;

pub use args::*;
