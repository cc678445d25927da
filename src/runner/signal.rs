//! Signals to a command's process group, and the names of signals, through
//! `nix`: a safe `killpg` and `Signal::as_str`, where this was `unsafe
//! libc::kill` and a hand-written name table.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The process group led by `pid` (each command leads its own group).
fn group(pid: u32) -> Option<Pid> {
    i32::try_from(pid).ok().map(Pid::from_raw)
}

/// Sends `sig` to the process group led by `pid` (the command and every
/// child it spawned that stayed in the group). The caller has not reaped
/// the leader yet, so its pid, the group id, cannot have been reused.
pub(super) fn signal_group(pid: u32, sig: Signal) {
    let Some(pgid) = group(pid) else { return };
    if let Err(err) = killpg(pgid, sig) {
        tracing::debug!(%err, pid, signal = sig.as_str(), "signalling the process group");
    }
}

/// Whether a process other than a zombie is in process group `pgid`.
/// Read from /proc, because `killpg(pgid, 0)` also counts zombies, which
/// linger where PID 1 does not reap (containers). Without /proc, falls
/// back to `killpg`.
pub(super) fn group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return group(pgid).is_some_and(|g| killpg(g, None).is_ok());
    };
    entries.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // "pid (comm) state ppid pgrp ...": comm may hold spaces and parens.
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            return false;
        };
        let mut fields = after.split_whitespace();
        let state = fields.next();
        let pgrp = fields.nth(1).and_then(|g| g.parse::<u32>().ok());
        pgrp == Some(pgid) && !matches!(state, Some("Z" | "X"))
    })
}

/// The name of signal number `sig` (`"SIGKILL"`), if it has one.
pub(super) fn name(sig: i32) -> Option<&'static str> {
    Signal::try_from(sig).ok().map(Signal::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_named() {
        assert_eq!(name(9), Some("SIGKILL"));
        assert_eq!(name(15), Some("SIGTERM"));
        assert_eq!(name(0), None);
        assert_eq!(name(1000), None);
    }
}
