//! What identifies a running command's OS process (`DIR/children/`), and
//! what the next server does with the commands of one that crashed: stop
//! them if they are still ours, never a process that reused their pid.
//! Also: what a command leaves in its process group when its leader exits.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use prochub::model::{Id, NewProcess, Process, Status};
use prochub::runner::{ORPHAN_ERROR, ORPHAN_STOPPED_ERROR, Runner};
use prochub::store::{ChildRecord, FileProcessStore, FollowEvent};

use prochub::client::{Client, OutputEvent};

use crate::helper::client::ServerProc;
use crate::helper::{temp_store, wait_until};

const WAIT: Duration = Duration::from_secs(20);
const GRACE: Duration = Duration::from_millis(300);

/// (state, start time) of a process from `/proc/PID/stat`.
fn stat(pid: u32) -> Option<(String, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let f: Vec<&str> = s[s.rfind(')')? + 1..].split_whitespace().collect();
    Some((f[0].to_owned(), f[19].parse().ok()?))
}

/// Whether `pid` runs (exists and is not a zombie).
fn runs(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != "Z" && state != "X")
}

fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// `sh -c script` leading a process group of its own (as the runner
/// spawns commands), with its first stdout line once printed.
fn spawn_group(script: &str) -> (Child, String) {
    let mut child = Command::new("sh")
        .args(["-c", script])
        .stdout(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("spawn sh");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("piped"))
        .read_line(&mut line)
        .expect("first line");
    (child, line.trim().to_owned())
}

/// A `running` record with a command, as a crashed server leaves it.
async fn orphan_record(store: &Arc<FileProcessStore>) -> Process {
    store
        .create_process(NewProcess {
            name: "orphan".into(),
            command: Some(vec!["sh".into(), "-c".into(), "…".into()]),
            ..Default::default()
        })
        .await
        .expect("create")
}

fn child_record(id: &Id, pid: u32, start_time: u64) -> ChildRecord {
    ChildRecord {
        id: id.clone(),
        pid,
        pgid: pid,
        start_time,
        boot_id: boot_id(),
    }
}

/// Processes (and the groups they lead) that a test started and that
/// must not outlive it when it fails (a regression here leaves a loop
/// that ignores SIGTERM running forever, holding the harness's stdout). Only acts while panicking:
/// after a passing test the groups are gone and their ids may be reused.
struct KillOnFailure(Vec<u32>);

impl Drop for KillOnFailure {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for &pid in &self.0 {
                // SAFETY: kill(2)/killpg(2) on processes this test started.
                unsafe {
                    libc::killpg(pid as libc::pid_t, libc::SIGKILL);
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A pid that was reused by another program after the crash has another
/// start time; a record from another boot names nothing alive. Neither is
/// signalled: the records end failed and the strangers run on.
#[tokio::test]
async fn a_reused_pid_or_another_boot_is_never_signalled_at_recovery() {
    let (_dir, store) = temp_store().await;
    let (mut stranger, _) = spawn_group("echo up; exec sleep 30");
    let pid = stranger.id();
    let _guard = KillOnFailure(vec![pid]);
    let (_, started) = stat(pid).expect("stranger's stat");
    let reused = orphan_record(&store).await;
    store
        .save_child(&child_record(&reused.id, pid, started + 1))
        .await
        .unwrap();
    let rebooted = orphan_record(&store).await;
    store
        .save_child(&ChildRecord {
            boot_id: Some("another-boot".into()),
            ..child_record(&rebooted.id, pid, started)
        })
        .await
        .unwrap();

    let runner = Runner::new(store.clone(), GRACE);
    assert_eq!(runner.recover_orphans().await.unwrap(), 2);
    for p in [&reused, &rebooted] {
        let rec = store.get_process(&p.id).unwrap();
        assert_eq!((rec.status, rec.error.as_deref()), (Status::Failed, Some(ORPHAN_ERROR)));
    }
    assert!(runs(pid), "a process that only shares the pid must not be signalled");
    assert!(stranger.try_wait().unwrap().is_none());
    assert!(
        store.saved_children().await.unwrap().is_empty(),
        "the files are removed"
    );
    kill(&mut stranger);
}

/// Regression: after `kill -9` of the server its commands ran on, and the
/// next server only marked their records failed. Now what still runs is
/// stopped: a loop that ignores SIGTERM gets SIGKILL after the grace
/// period, and a background job whose leader already exited is found by
/// its process group.
#[tokio::test]
async fn bug_orphans_kept_running_now_they_are_stopped_even_ignoring_sigterm() {
    let (_dir, store) = temp_store().await;
    let (mut stubborn, ready) = spawn_group("trap '' TERM; echo ready; while :; do sleep 1; done");
    assert_eq!(ready, "ready");
    let (mut leader, member) = spawn_group("sleep 30 & echo $!");
    let _guard = KillOnFailure(vec![stubborn.id(), leader.id()]);
    let member: u32 = member.parse().expect("the background pid");
    let leader_start = stat(leader.id()).expect("leader's stat").1;
    assert!(leader.wait().unwrap().success(), "the leader exits, its job stays");
    assert!(runs(member));

    let a = orphan_record(&store).await;
    let stubborn_start = stat(stubborn.id()).unwrap().1;
    store
        .save_child(&child_record(&a.id, stubborn.id(), stubborn_start))
        .await
        .unwrap();
    let b = orphan_record(&store).await;
    store
        .save_child(&child_record(&b.id, leader.id(), leader_start))
        .await
        .unwrap();

    let runner = Runner::new(store.clone(), GRACE);
    let t0 = Instant::now();
    assert_eq!(runner.recover_orphans().await.unwrap(), 2);
    assert!(
        t0.elapsed() >= GRACE,
        "SIGTERM was ignored: SIGKILL comes after the grace period"
    );
    let status = stubborn.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    wait_until("the background job is gone", WAIT, async || !runs(member)).await;
    for p in [&a, &b] {
        let rec = store.get_process(&p.id).unwrap();
        assert_eq!(
            (rec.status, rec.error.as_deref()),
            (Status::Failed, Some(ORPHAN_STOPPED_ERROR))
        );
    }
    assert!(store.saved_children().await.unwrap().is_empty());
}

/// Starts `argv` through the runner and follows it from before the spawn.
async fn run(store: &Arc<FileProcessStore>, runner: &Arc<Runner>, argv: &[&str]) -> (Process, prochub::store::Follow) {
    let p = store
        .create_process(NewProcess {
            name: argv.join(" "),
            command: Some(argv.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        })
        .await
        .unwrap();
    let follow = store.subscribe(&p.id, None).unwrap();
    runner.start(&p, None, BTreeMap::new()).await.unwrap();
    (p, follow)
}

/// Output until the status, and the status.
async fn to_the_end(mut f: prochub::store::Follow) -> (String, Status) {
    let mut text = String::new();
    tokio::time::timeout(WAIT, async {
        while let Some(ev) = f.next().await {
            match ev {
                FollowEvent::Chunk(c) => text.push_str(&c.content),
                FollowEvent::Status(s) => return (text, s.status),
                FollowEvent::Lagged { .. } => {}
            }
        }
        panic!("no status")
    })
    .await
    .expect("the command ends in time")
}

/// The file that lets the next server stop a command is written before
/// `start` returns (so before the create is answered), says which process
/// it is, and is gone once the command ended.
#[tokio::test]
async fn a_running_command_is_on_disk_in_children_until_it_ends() {
    let (dir, store) = temp_store().await;
    let runner = Runner::new(store.clone(), GRACE);
    let (p, mut f) = run(&store, &runner, &["sh", "-c", "echo $$; exec sleep 30"]).await;
    let saved = store.saved_children().await.unwrap();
    assert_eq!(saved.len(), 1);
    let path = dir.path().join("children").join(format!("{}.json", p.id));
    let on_disk: ChildRecord = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(on_disk, saved[0]);
    let Some(FollowEvent::Chunk(c)) = tokio::time::timeout(WAIT, f.next()).await.unwrap() else {
        panic!("the pid comes first");
    };
    let pid: u32 = c.content.trim().parse().unwrap();
    assert_eq!((on_disk.pid, on_disk.pgid), (pid, pid));
    assert_eq!(Some(on_disk.start_time), stat(pid).map(|s| s.1));
    assert_eq!(on_disk.boot_id, boot_id());
    let rec = tokio::time::timeout(WAIT, runner.cancel(&p.id)).await.unwrap().unwrap();
    assert_eq!(rec.status, Status::Cancelled);
    assert!(!path.exists(), "removed once the end is recorded");
    assert!(!runs(pid));
}

/// Regression: a background job left in the command's group (`sh -c
/// 'sleep 61 & echo'`) outlived its `completed` record, and the graceful
/// shutdown that no longer tracked it. When the leader exits, the rest of
/// the group now gets SIGTERM, and SIGKILL after the grace period.
#[tokio::test]
async fn bug_a_background_job_outlived_its_commands_completed_record() {
    let (_dir, store) = temp_store().await;
    let runner = Runner::new(store.clone(), GRACE);
    for script in ["sleep 61 & echo $!", "(trap '' TERM; exec sleep 61) & echo $!"] {
        let t0 = Instant::now();
        let (p, f) = run(&store, &runner, &["sh", "-c", script]).await;
        let (text, status) = to_the_end(f).await;
        let job: u32 = text.trim().parse().expect("the job's pid");
        let _guard = KillOnFailure(vec![job]);
        assert_eq!(status, Status::Completed, "{script}");
        assert!(!runs(job), "{script}: the job outlived the record");
        assert!(
            t0.elapsed() < GRACE + Duration::from_secs(3),
            "{script}: {:?}",
            t0.elapsed()
        );
        assert_eq!(store.get_process(&p.id).unwrap().exit_code, Some(0));
    }
    wait_until("the supervisors are done", WAIT, async || runner.running() == 0).await;
}

fn command(script: &str) -> NewProcess {
    NewProcess {
        name: script.into(),
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        ..Default::default()
    }
}

/// The pid a command printed as its first line.
async fn printed_pid(c: &Client, id: &str) -> u32 {
    let mut f = c.follow(id, Some(0));
    loop {
        match tokio::time::timeout(WAIT, f.next()).await.unwrap().unwrap().unwrap() {
            OutputEvent::Chunk { content, .. } => return content.trim().parse().expect("a pid"),
            OutputEvent::Done => panic!("ended before printing its pid"),
            _ => {}
        }
    }
}

/// Regression, with the real binary: after `kill -9` of the server and a
/// restart, a `sleep 30` and a loop ignoring SIGTERM kept running, their
/// records said `failed` and `cancel` answered 409: nothing could stop
/// them. The restarted server stops both before it serves a request.
#[tokio::test]
async fn bug_commands_outlived_a_killed_server_and_nothing_could_stop_them() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let addr = server.addr.to_string();
    let c = Client::new(&server.url, None).unwrap();
    let sleeper = c.create_process(&command("echo $$; exec sleep 30")).await.unwrap();
    let stubborn = c
        .create_process(&command("trap '' TERM; echo $$; while :; do sleep 1; done"))
        .await
        .unwrap();
    let mut pids = Vec::new();
    let mut guard = KillOnFailure(Vec::new());
    for p in [&sleeper, &stubborn] {
        let pid = printed_pid(&c, &p.id).await;
        guard.0.push(pid);
        let file = data.path().join("children").join(format!("{}.json", p.id));
        let saved: ChildRecord = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        assert_eq!(saved.pid, pid, "the file names the command's process");
        pids.push(pid);
    }
    server.kill().await;
    assert!(pids.iter().all(|&pid| runs(pid)), "the crash left them running");

    let server = ServerProc::start_with(data.path(), &addr, &["--allow-exec"]).await;
    for p in [&sleeper, &stubborn] {
        let rec = c.get_process(&p.id).await.unwrap();
        assert_eq!(
            (rec.status, rec.error.as_deref()),
            (Status::Failed, Some(ORPHAN_STOPPED_ERROR))
        );
    }
    for pid in pids {
        assert!(!runs(pid), "pid {pid} survived the restart");
    }
    let left = std::fs::read_dir(data.path().join("children")).unwrap().count();
    assert_eq!(left, 0, "nothing is left to stop");
    assert_eq!(server.stop().await, Some(0));
}

/// The same over HTTP: a background job does not outlive `completed`, nor
/// the graceful shutdown after it.
#[tokio::test]
async fn bug_a_background_job_outlived_completed_and_a_graceful_shutdown() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let c = Client::new(&server.url, None).unwrap();
    let p = c.create_process(&command("sleep 61 & echo $!")).await.unwrap();
    let job = printed_pid(&c, &p.id).await;
    let _guard = KillOnFailure(vec![job]);
    wait_until("the record ends", WAIT, async || {
        c.get_process(&p.id).await.unwrap().status != Status::Running
    })
    .await;
    assert_eq!(c.get_process(&p.id).await.unwrap().status, Status::Completed);
    assert!(!runs(job), "the job outlived `completed`");
    assert_eq!(server.stop().await, Some(0));
    assert!(!runs(job));
}
