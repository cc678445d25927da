//! The client side: the client library against a real server, the
//! offline queue, workspace identity, and the CLI.

mod api;
mod cli;
mod offline;
