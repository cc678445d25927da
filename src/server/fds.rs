//! File descriptors (issue 8): the server raises its soft `RLIMIT_NOFILE`
//! to the hard limit at start, as nginx does, and derives its default
//! connection cap from it, keeping [`STORE_RESERVE`] descriptors for the
//! store. Regression: 400 connections that sent nothing used the
//! descriptors a durable write needed, and an authenticated create
//! answered 500.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept for everything but connections, the arithmetic:
/// the store's bounded cache of open output logs (`MAX_OPEN_LOGS`, 256,
/// with each log's index beside it: 512), durable record writes in
/// flight (temp file + folder, 2 each; 64 at once is far past what the
/// disk's fsync rate lets through: 128), server-run commands' pipes (3
/// each, for 64 commands: 192), and the fixed rest (stdio, `LOCK`, the
/// listener, epoll, the runtime's eventfds and signal pipe, `server.json`
/// writes: under 64), rounded up to 1,024 for what a later change adds.
pub const STORE_RESERVE: u64 = 1024;

/// The descriptor limit after raising the soft limit to the hard one
/// (or the soft limit as it was, if raising it failed: logged).
pub fn raise_nofile_limit() -> u64 {
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(limits) => limits,
        Err(e) => {
            tracing::warn!(%e, "cannot read RLIMIT_NOFILE; assuming 1024");
            return 1024;
        }
    };
    if soft >= hard {
        return soft;
    }
    match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
        Ok(()) => hard,
        Err(e) => {
            tracing::warn!(%e, soft, hard, "cannot raise RLIMIT_NOFILE to its hard limit");
            soft
        }
    }
}

/// The reserve under a descriptor limit: [`STORE_RESERVE`], or half the
/// limit when the limit is small (a 1,024 limit leaves 512 connections).
pub fn reserve_for(limit: u64) -> u64 {
    STORE_RESERVE.min(limit / 2)
}

/// The connection cap a descriptor limit allows: the limit minus the
/// reserve (one descriptor per connection or WebSocket).
pub fn max_connections_for(limit: u64) -> usize {
    usize::try_from(limit - reserve_for(limit)).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve() {
        assert_eq!(max_connections_for(1_048_576), 1_048_576 - 1024);
        assert_eq!(max_connections_for(20_000), 18_976);
        assert_eq!(max_connections_for(1024), 512);
        assert_eq!(max_connections_for(1), 1);
    }
}
