//! The CLI end to end: the real binary as server and as client.

use std::process::Output;

use prochub::model::{Process, Status};

use crate::helper::client::{DeadPort, Gate, Hold, ServerProc, WAIT, prochub};

/// Runs `prochub ARGS` to completion.
async fn cli(args: &[&str]) -> Output {
    let mut cmd = prochub();
    cmd.args(args);
    tokio::time::timeout(WAIT, cmd.output())
        .await
        .expect("the command ends in time")
        .expect("run prochub")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[tokio::test]
async fn run_ls_follow_show_rm_against_a_served_folder() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let url = server.url.as_str();

    let out = cli(&[
        "run",
        "--server",
        url,
        "--name",
        "three",
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ])
    .await;
    assert_eq!(
        out.status.code(),
        Some(3),
        "exits with the command's code; stderr: {}",
        text(&out.stderr)
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    // Each pipe to its own stream, even for output written before `run`
    // attached (replayed from the log with its pipe).
    assert_eq!(stdout, "out\n", "stdout {stdout:?} stderr {stderr:?}");
    assert!(stderr.contains("err\n"), "stdout {stdout:?} stderr {stderr:?}");
    assert!(!stdout.contains('\x1b'), "no colour when piped");

    // ls: a table with the failed run; --json parses.
    let out = cli(&["ls", "--server", url]).await;
    assert!(out.status.success());
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("ID") && lines[0].contains("STATUS"), "{table}");
    assert!(lines[1].contains("three") && lines[1].contains("failed"), "{table}");
    let out = cli(&["ls", "--server", url, "--json"]).await;
    let listed: Vec<Process> = serde_json::from_slice(&out.stdout).expect("ls --json is JSON");
    assert_eq!(listed.len(), 1);
    let p = &listed[0];
    assert_eq!((p.status, p.exit_code), (Status::Failed, Some(3)));
    let out = cli(&["ls", "--server", url, "--status", "completed", "--json"]).await;
    assert_eq!(serde_json::from_slice::<Vec<Process>>(&out.stdout).unwrap().len(), 0);

    // follow of a finished process prints its output and exits 0.
    let out = cli(&["follow", "--server", url, &p.id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let followed = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert!(followed.contains("out\n") && followed.contains("err\n"), "{followed:?}");
    let out = cli(&["follow", "--server", url, "--from-start", &p.id]).await;
    assert_eq!(out.status.code(), Some(0));

    // show: the record as JSON. rm: gone; rm again: a clear error.
    let out = cli(&["show", "--server", url, &p.id]).await;
    let shown: Process = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown.id, p.id);
    let out = cli(&["rm", "--server", url, &p.id]).await;
    assert!(out.status.success());
    let out = cli(&["rm", "--server", url, &p.id]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not found"), "{}", text(&out.stderr));

    // The address comes from DATA/server.json when --server is absent.
    let data_arg = data.path().to_str().unwrap();
    let out = cli(&["submit", "--data", data_arg, "pushed by hand"]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = text(&out.stdout).trim().to_owned();
    let out = cli(&["show", "--data", data_arg, &id]).await;
    let shown: Process = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((shown.name.as_str(), shown.status), ("pushed by hand", Status::Running));

    // prune never removes running ones.
    let out = cli(&["prune", "--server", url, "--max-count", "0"]).await;
    assert_eq!(text(&out.stdout), "removed 0\n");
    server.stop().await;
}

#[tokio::test]
async fn run_follows_live_output_and_completes() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let cwd = tempfile::tempdir().unwrap();
    let mut cmd = prochub();
    cmd.args(["run", "--server", &server.url, "--", "sh", "-c"])
        .arg("pwd; sleep 0.3; echo late >&2; printf 'no newline'")
        .current_dir(cwd.path());
    let out = tokio::time::timeout(WAIT, cmd.output()).await.unwrap().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with(&format!("{}\n", cwd.path().canonicalize().unwrap().display())),
        "runs in the caller's folder: {stdout:?}"
    );
    assert!(stdout.ends_with("no newline"), "{stdout:?}");
    assert_eq!(text(&out.stderr), "late\n", "a live stderr chunk goes to stderr");
    server.stop().await;
}

#[tokio::test]
async fn errors_are_clear_and_exit_nonzero() {
    let dead = DeadPort::new();
    let url = dead.url();
    let out = cli(&["ls", "--server", &url]).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!("prochub: no server at {url}: start one with `prochub serve`")
    );

    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start_with(data.path(), "127.0.0.1:0", &["--token", "t0k"]).await;
    let out = cli(&["ls", "--server", &server.url]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("401: this server needs --token"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(&["ls", "--server", &server.url, "--token", "t0k"]).await;
    assert!(out.status.success());
    let out = cli(&["run", "--server", &server.url, "--token", "t0k", "--", "true"]).await;
    assert_eq!(out.status.code(), Some(1), "no --allow-exec");
    assert!(text(&out.stderr).contains("403"), "{}", text(&out.stderr));
    server.stop().await;
}

#[tokio::test]
async fn run_of_a_missing_command_fails_with_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let out = cli(&["run", "--server", &server.url, "--", "prochub-no-such-command"]).await;
    assert_eq!(out.status.code(), Some(1));
    // Regression: piped, nothing said why.
    assert_eq!(
        text(&out.stderr),
        "prochub: cannot start \"prochub-no-such-command\": command not found\n"
    );
    let out = cli(&["ls", "--server", &server.url, "--json"]).await;
    let listed: Vec<Process> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0].status, Status::Failed);
    assert!(
        listed[0].error.as_deref().unwrap().contains("command not found"),
        "{:?}",
        listed[0].error
    );
    server.stop().await;
}

#[tokio::test]
async fn ctrl_c_cancels_the_remote_command() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let mut cmd = prochub();
    cmd.args([
        "run",
        "--server",
        &server.url,
        "--",
        "sh",
        "-c",
        "echo started; sleep 30",
    ])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    // Wait for the command's first output: it runs and we follow it.
    let mut stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    use tokio::io::AsyncBufReadExt;
    tokio::time::timeout(WAIT, stdout.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line, "started\n");
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(child.id().unwrap() as libc::pid_t, libc::SIGINT) };
    let status = tokio::time::timeout(WAIT, child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(130));
    let c = prochub::client::Client::new(&server.url, None).unwrap();
    let all = c.list_all(&Default::default(), None).await.unwrap();
    assert_eq!(all[0].status, Status::Cancelled);
    server.stop().await;
}

#[tokio::test]
async fn events_prints_one_json_line_per_event() {
    use tokio::io::AsyncBufReadExt;
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let mut cmd = prochub();
    cmd.args(["events", "--server", &server.url])
        .stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let c = prochub::client::Client::new(&server.url, None).unwrap();
    // The child subscribes at some point after spawning; nothing outside
    // it can see when, so create processes until one is reported.
    let mut line = None;
    for i in 0..40 {
        c.create_process(&prochub::model::NewProcess {
            name: format!("p{i}"),
            ..Default::default()
        })
        .await
        .unwrap();
        if let Ok(l) = tokio::time::timeout(std::time::Duration::from_millis(250), lines.next_line()).await {
            line = l.unwrap();
            break;
        }
    }
    let line = line.expect("an event line");
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["type"], "process-added");
    assert!(v["process"]["name"].as_str().unwrap().starts_with('p'));

    // Regression: with its reader gone (`prochub events | head -1`) it
    // ran on forever; now the next event ends it with 141.
    drop(lines);
    let status = tokio::time::timeout(WAIT, async {
        loop {
            c.create_process(&prochub::model::NewProcess {
                name: "after".into(),
                ..Default::default()
            })
            .await
            .unwrap();
            if let Ok(status) = tokio::time::timeout(std::time::Duration::from_millis(100), child.wait()).await {
                return status.unwrap();
            }
        }
    })
    .await
    .expect("events ends once nobody reads it");
    assert_eq!(status.code(), Some(141));
    server.stop().await;
}

#[tokio::test]
async fn follow_starts_at_the_last_lines_like_tail() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let c = prochub::client::Client::new(&server.url, None).unwrap();
    let p = c
        .create_process(&prochub::model::NewProcess {
            name: "long".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // 40 KiB of 3-byte characters: the look-back window starts mid-character.
    let lines: Vec<String> = (0..1000).map(|i| format!("{i:04} €€€€€€€€€€€€\n")).collect();
    for chunk in lines.chunks(100) {
        c.append_output(&p.id, &chunk.concat()).await.unwrap();
    }
    c.update_process(&p.id, &prochub::model::ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    let out = cli(&["follow", "--server", &server.url, &p.id]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), lines[990..].concat());
    let out = cli(&["follow", "--server", &server.url, "--from-start", &p.id]).await;
    assert_eq!(text(&out.stdout), lines.concat());
    server.stop().await;
}

/// Regression: `run` installed its Ctrl-C handler only once the create
/// had returned, so a Ctrl-C while it was in flight killed the CLI and
/// left the command running on the server, unwatched.
#[tokio::test]
async fn ctrl_c_while_the_run_request_is_in_flight_cancels_the_command() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    // Hold the first request (the create) until the CLI got its Ctrl-C.
    let gate = Gate::start(server.addr, 1, Hold::UntilReleased).await;
    let mut cmd = prochub();
    cmd.args(["run", "--server", &gate.url(), "--", "sleep", "30"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap();
    gate.held().await;
    // SAFETY: kill(2) on our own unreaped child.
    unsafe { libc::kill(child.id().unwrap() as libc::pid_t, libc::SIGINT) };
    // The signal is pending before the answer can be read: with the bug
    // the CLI dies of it; fixed, it has noted the Ctrl-C.
    gate.release();
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(130), "stderr: {}", text(&out.stderr));
    let c = prochub::client::Client::new(&server.url, None).unwrap();
    let all = c.list_all(&Default::default(), None).await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(
        all[0].status,
        Status::Cancelled,
        "the command does not run on unwatched"
    );
    server.stop().await;
}

/// Regression: a command killed by a signal made `run` exit 1; a shell
/// (and `docker run`, `timeout`) reports 128 + the signal.
#[tokio::test]
async fn run_of_a_command_killed_by_a_signal_exits_128_plus_the_signal() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let out = cli(&["run", "--server", &server.url, "--", "sh", "-c", "kill -9 $$"]).await;
    assert_eq!(out.status.code(), Some(137), "stderr: {}", text(&out.stderr));
    server.stop().await;
}

/// Regression: a closed stdout pipe was ignored, so `prochub follow ID |
/// head -1` never ended while the process ran, and `prochub run … | head
/// -1` left the command running with nobody reading it.
#[tokio::test]
async fn follow_and_run_stop_when_the_reader_of_stdout_goes_away() {
    use tokio::io::AsyncBufReadExt;
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let c = prochub::client::Client::new(&server.url, None).unwrap();

    // follow: exits 141 (128 + SIGPIPE); the process itself runs on.
    let p = c
        .create_process(&prochub::model::NewProcess {
            name: "pushed".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    c.append_output(&p.id, "first\n").await.unwrap();
    let mut child = prochub()
        .args(["follow", "--server", &server.url, "--from-start", &p.id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(WAIT, out.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(line, "first\n");
    drop(out);
    let exited = tokio::time::timeout(WAIT, async {
        loop {
            c.append_output(&p.id, "more\n").await.unwrap();
            if let Ok(status) = tokio::time::timeout(std::time::Duration::from_millis(100), child.wait()).await {
                return status.unwrap();
            }
        }
    })
    .await
    .expect("follow ends once nobody reads it");
    assert_eq!(exited.code(), Some(141));
    assert_eq!(c.get_process(&p.id).await.unwrap().status, Status::Running);

    // run: also cancels the command, which nobody reads any more.
    let mut child = prochub()
        .args([
            "run",
            "--server",
            &server.url,
            "--",
            "sh",
            "-c",
            "while :; do echo y; sleep 0.05; done",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::time::timeout(WAIT, out.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    drop(out);
    let status = tokio::time::timeout(WAIT, child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(141));
    let all = c.list_all(&Default::default(), None).await.unwrap();
    let run = all.iter().find(|r| r.command.is_some()).unwrap();
    assert_eq!(run.status, Status::Cancelled);
    server.stop().await;
}

/// A pushed, running process with `lines` as its output so far.
async fn pushed_with(c: &prochub::client::Client, lines: &[&str]) -> Process {
    let p = c
        .create_process(&prochub::model::NewProcess {
            name: "history".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for l in lines {
        c.append_output(&p.id, l).await.unwrap();
    }
    p
}

/// Reads one line of a child's stdout, within [`WAIT`].
async fn next_line(out: &mut tokio::io::BufReader<tokio::process::ChildStdout>) -> String {
    use tokio::io::AsyncBufReadExt;
    let mut line = String::new();
    tokio::time::timeout(WAIT, out.read_line(&mut line))
        .await
        .expect("a line in time")
        .unwrap();
    line
}

#[tokio::test]
async fn follow_no_follow_prints_the_stored_output_of_a_running_process_and_exits() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let c = prochub::client::Client::new(&server.url, None).unwrap();
    let p = pushed_with(&c, &["a\n", "b\n", "c\n"]).await;
    let out = cli(&["follow", "--server", &server.url, "--no-follow", &p.id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "a\nb\nc\n");
    assert_eq!(c.get_process(&p.id).await.unwrap().status, Status::Running);
    server.stop().await;
}

#[tokio::test]
async fn follow_lines_prints_the_last_lines_then_live_ones() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let c = prochub::client::Client::new(&server.url, None).unwrap();
    let p = pushed_with(&c, &["1\n2\n", "3\n", "4\n5\n"]).await;
    let mut child = prochub()
        .args(["follow", "--server", &server.url, "--lines", "2", &p.id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    assert_eq!(next_line(&mut out).await, "4\n");
    assert_eq!(next_line(&mut out).await, "5\n");
    // Live from where the history ended: nothing between is lost, even if
    // the stream connects after this append.
    c.append_output(&p.id, "live\n").await.unwrap();
    assert_eq!(next_line(&mut out).await, "live\n");
    c.update_process(&p.id, &prochub::model::ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    assert_eq!(next_line(&mut out).await, "", "ends with the process");
    let status = tokio::time::timeout(WAIT, child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    server.stop().await;
}

#[tokio::test]
async fn follow_timestamps_prefix_stored_and_live_lines_with_a_time() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let c = prochub::client::Client::new(&server.url, None).unwrap();
    let before = prochub::model::now();
    let p = pushed_with(&c, &["stored\n"]).await;
    let mut child = prochub()
        .args(["follow", "--server", &server.url, "--timestamps", &p.id])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let stamped = |line: String, want: &str| {
        let (ts, rest) = line.split_once(' ').unwrap_or_else(|| panic!("no time in {line:?}"));
        let ts: prochub::model::Timestamp = ts.parse().unwrap_or_else(|e| panic!("{ts:?}: {e}"));
        assert!(ts >= before, "{line:?}");
        assert!(
            ts.to_rfc3339_opts(chrono::SecondsFormat::Millis, true) == line[..24],
            "{line:?}"
        );
        assert_eq!(rest, want);
    };
    stamped(next_line(&mut out).await, "stored\n");
    // A live line split across two appends gets one prefix.
    c.append_output(&p.id, "li").await.unwrap();
    c.append_output(&p.id, "ve\n").await.unwrap();
    stamped(next_line(&mut out).await, "live\n");
    c.update_process(&p.id, &prochub::model::ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    let status = tokio::time::timeout(WAIT, child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    server.stop().await;
}

#[tokio::test]
async fn follow_since_and_until_select_by_time_and_stream_by_pipe() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start(data.path()).await;
    let url = server.url.as_str();
    let c = prochub::client::Client::new(url, None).unwrap();
    let p = pushed_with(&c, &["old\n"]).await;
    let first = prochub::model::now();
    crate::helper::wait_until("the clock moves on", WAIT, async || prochub::model::now() > first).await;
    let mid = prochub::model::format_ts(&prochub::model::now());
    crate::helper::wait_until("the clock moves on", WAIT, async || {
        prochub::model::format_ts(&prochub::model::now()) > mid
    })
    .await;
    c.append_output(&p.id, "new\n").await.unwrap();
    c.update_process(&p.id, &prochub::model::ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    let out = cli(&["follow", "--server", url, "--since", &mid, &p.id]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "new\n", "older output is left out");
    let out = cli(&["follow", "--server", url, "--since", "1h", &p.id]).await;
    assert_eq!(text(&out.stdout), "old\nnew\n");
    let out = cli(&["follow", "--server", url, "--until", &mid, &p.id]).await;
    assert_eq!(text(&out.stdout), "old\n");

    // --stream: one pipe of a server-run command, on its own output.
    let out = cli(&["run", "--server", url, "--", "sh", "-c", "echo out; echo err >&2"]).await;
    assert_eq!(out.status.code(), Some(0));
    let listed = c.list_all(&Default::default(), None).await.unwrap();
    let run = listed.iter().find(|r| r.command.is_some()).unwrap();
    let out = cli(&["follow", "--server", url, "--stream", "stderr", &run.id]).await;
    assert_eq!((text(&out.stdout), text(&out.stderr)), (String::new(), "err\n".into()));
    let out = cli(&["follow", "--server", url, "--stream", "stdout", &run.id]).await;
    assert_eq!((text(&out.stdout), text(&out.stderr)), ("out\n".into(), String::new()));
    server.stop().await;
}

#[tokio::test]
async fn follow_prints_one_line_where_output_was_elided() {
    let data = tempfile::tempdir().unwrap();
    let server = ServerProc::start_with(data.path(), "127.0.0.1:0", &["--max-output", "64KiB"]).await;
    let c = prochub::client::Client::new(&server.url, None).unwrap();
    let line = "y".repeat(1023) + "\n";
    let lines = vec![line.as_str(); 256];
    let p = pushed_with(&c, &lines).await;
    c.update_process(&p.id, &prochub::model::ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    let rec = c.get_process(&p.id).await.unwrap();
    assert!(rec.output_elided > 0, "{rec:?}");
    let out = cli(&["follow", "--server", &server.url, "--from-start", &p.id]).await;
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stderr), format!("[… {} bytes elided …]\n", rec.output_elided));
    assert_eq!(out.stdout.len() as u64, rec.output_bytes - rec.output_elided);
    server.stop().await;
}
