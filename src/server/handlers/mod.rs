//! REST handlers: each parses its input, calls the store (or the runner)
//! once, and shapes the response. The store does the real work.

pub mod health;
pub mod output;
pub mod processes;
pub mod workspaces;
