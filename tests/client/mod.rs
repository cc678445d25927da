//! The client side: the client library against a real server, the
//! offline queue, workspace identity, output history, and the CLI.

mod api;
mod cli;
mod history;
mod offline;
