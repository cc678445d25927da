//! Signals to a command's process group, and the names of signals, through
//! `nix`: a safe `killpg` and `Signal::as_str`, where this was `unsafe
//! libc::kill` and a hand-written name table. Also what `/proc` says of a
//! process (its group, its start time), which tells a command's process
//! from a later one that reuses its pid.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// The process group led by `pid` (each command leads its own group).
fn group(pid: u32) -> Option<Pid> {
    i32::try_from(pid).ok().map(Pid::from_raw)
}

/// Sends `sig` to process group `pgid` (a command and every process it
/// spawned that stayed in its group). Safe against pid reuse as long as
/// the group has a member: Linux frees a pid for reuse only once no
/// process, group or session uses it, so the caller either has not reaped
/// the leader yet or has just seen a live member ([`group_alive`]).
pub(super) fn signal_group(pgid: u32, sig: Signal) {
    let Some(group) = group(pgid) else { return };
    if let Err(err) = killpg(group, sig) {
        tracing::debug!(%err, pgid, signal = sig.as_str(), "signalling the process group");
    }
}

/// What `/proc/PID/stat` says of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ProcStat {
    /// Dead but not reaped (`Z`, `X`): signals reach nothing.
    pub zombie: bool,
    pub pgrp: u32,
    /// Field 22: clock ticks after boot at which the process started.
    pub start_time: u64,
}

/// Reads `/proc/PID/stat`; None when there is no such process (or no /proc).
pub(super) fn proc_stat(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&stat)
}

/// Parses "pid (comm) state ppid pgrp … starttime …"; comm may hold
/// spaces and parentheses, so fields are counted after the last `)`.
fn parse_stat(stat: &str) -> Option<ProcStat> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): field N is at index N - 3.
    Some(ProcStat {
        zombie: matches!(*fields.first()?, "Z" | "X"),
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), if the kernel says.
pub(super) fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// Whether a process other than a zombie is in process group `pgid`.
/// Read from /proc, because `killpg(pgid, 0)` also counts zombies, which
/// linger where PID 1 does not reap (containers). Without /proc, falls
/// back to `killpg`. Blocking (a walk of /proc): async callers use
/// [`group_alive_async`].
pub(super) fn group_alive(pgid: u32) -> bool {
    let Some(g) = group(pgid) else { return false };
    // The common case, an empty group, without a walk of /proc.
    if killpg(g, None) == Err(nix::errno::Errno::ESRCH) {
        return false;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return killpg(g, None).is_ok();
    };
    entries.flatten().any(|e| {
        e.file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .and_then(proc_stat)
            .is_some_and(|st| st.pgrp == pgid && !st.zombie)
    })
}

/// [`group_alive`] on the blocking pool.
pub(super) async fn group_alive_async(pgid: u32) -> bool {
    tokio::task::spawn_blocking(move || group_alive(pgid))
        .await
        .unwrap_or(false)
}

/// How often a process group being stopped is checked for members left.
const GROUP_POLL: std::time::Duration = std::time::Duration::from_millis(50);
/// How long [`end_group`] waits for the kernel to finish off a group after
/// SIGKILL (it cannot be ignored, but a process in uninterruptible sleep,
/// a stuck NFS read, dies only when that returns).
const KILL_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Ends what is left of process group `pgid`: SIGTERM (unless the caller
/// sent it already), then SIGKILL to whatever is still there at
/// `deadline`, then waits (at most [`KILL_WAIT`]) until it is gone.
/// Returns at once when the group is empty; returns whether anything had
/// to be signalled. The one way every stop ends a group: a
/// cancelled command, the rest of a group whose leader exited, a group
/// left by a server that crashed.
pub(super) async fn end_group(pgid: u32, deadline: tokio::time::Instant, term_sent: bool) -> bool {
    if !group_alive_async(pgid).await {
        return false;
    }
    if !term_sent {
        signal_group(pgid, Signal::SIGTERM);
    }
    loop {
        if !group_alive_async(pgid).await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::info!(pgid, "processes of a command ignored SIGTERM; sending SIGKILL");
            signal_group(pgid, Signal::SIGKILL);
            break;
        }
        tokio::time::sleep(GROUP_POLL).await;
    }
    let killed_by = tokio::time::Instant::now() + KILL_WAIT;
    while group_alive_async(pgid).await && tokio::time::Instant::now() < killed_by {
        tokio::time::sleep(GROUP_POLL).await;
    }
    true
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

    #[test]
    fn stat_fields_are_counted_after_the_command_name() {
        let line = "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100";
        assert_eq!(
            parse_stat(line),
            Some(ProcStat {
                zombie: false,
                pgrp: 4242,
                start_time: 987654
            })
        );
        assert!(parse_stat(&line.replace(") S", ") Z")).is_some_and(|s| s.zombie));
        assert_eq!(parse_stat("4242 (short) S 1"), None);
        let me = proc_stat(std::process::id()).expect("our own stat");
        assert!(!me.zombie && me.start_time > 0);
    }
}
