//! Server-run commands (SPEC section 6), the server-side runner: against a
//! store in a temporary folder (`direct`), and through the HTTP API of a
//! real server (`http`).

mod direct;
mod http;
mod orphans;
