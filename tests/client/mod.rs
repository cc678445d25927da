//! The client side: server-run commands, the client library against a
//! real server, the offline queue, workspace identity, and the CLI.

mod api;
mod cli;
mod exec;
mod offline;
mod runner;
