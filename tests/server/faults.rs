//! Fault injection against the real binary: a low descriptor limit
//! (`RLIMIT_NOFILE`), a full disk and a read-only folder (a small tmpfs mounted
//! for the test: we run as root here and in CI). Each test checks the
//! answers while the fault lasts, that everything works once it is gone,
//! and that a restart shows what the API last answered (memory and disk
//! never drift apart). A mount that is not permitted fails the test with a
//! message; it never skips.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tempfile::TempDir;

use crate::helper::http::{Method, append, call, complete, create, delete, get, patch_json, post_json};
use crate::helper::server::BinServer;

/// A tmpfs of `size` mounted on a fresh folder under a TempDir, unmounted
/// (lazily, so a server killed a moment ago cannot keep it busy) on drop,
/// even when the test fails.
struct Tmpfs {
    mnt: PathBuf,
    _dir: TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().expect("temp dir");
        let mnt = dir.path().join("mnt");
        std::fs::create_dir(&mnt).expect("mount point");
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", path_str(&mnt)],
            "these tests mount a tmpfs and need root (CAP_SYS_ADMIN)",
        );
        Tmpfs { mnt, _dir: dir }
    }

    /// `mount -o remount,ro|rw`.
    fn remount(&self, mode: &str) {
        run(
            "mount",
            &["-o", &format!("remount,{mode}"), path_str(&self.mnt)],
            "remount failed (a file open for writing keeps a folder from going read-only)",
        );
    }

    fn data(&self) -> PathBuf {
        self.mnt.join("data")
    }

    /// Fills the file system with one file, until it is full.
    fn fill(&self) -> PathBuf {
        let path = self.mnt.join("filler");
        let mut f = std::fs::File::create(&path).expect("create filler");
        let block = vec![0u8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // The last partial page too.
        while f.write(&[0u8; 512]).is_ok_and(|n| n > 0) {}
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.mnt).status();
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

fn run(cmd: &str, args: &[&str], why: &str) {
    let out = std::process::Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {} ({why})",
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// The real binary under a descriptor limit of `nofile`, soft and hard (a
/// server that raises its soft limit to the hard one stays at N).
async fn start_limited(data: &Path, nofile: u64) -> BinServer {
    BinServer::builder(data).nofile(nofile, nofile).start().await
}

async fn append_text(addr: std::net::SocketAddr, id: &str, text: &str) -> crate::helper::http::Reply {
    call(
        addr,
        Method::POST,
        &format!("/api/processes/{id}/output"),
        &[("content-type", "text/plain")],
        text.to_owned(),
    )
    .await
}

async fn output(addr: std::net::SocketAddr, id: &str) -> String {
    let r = get(addr, &format!("/api/processes/{id}/output")).await;
    r.expect(200);
    r.text()
}

/// Asserts a 507/503 fault answer: its code, and a message naming the
/// file by its place in the data folder.
fn expect_fault(r: &crate::helper::http::Reply, status: u16, code: &str, names: &str) {
    r.expect(status);
    let v = r.json();
    assert_eq!(v["code"], code, "{v}");
    let msg = v["error"].as_str().expect("message");
    assert!(msg.contains(names), "the message names {names}: {msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bug_300_running_logs_under_ulimit_256_broke_every_call_until_a_restart() {
    const PROCESSES: usize = 300;
    let dir = tempfile::tempdir().expect("temp dir");
    let s = start_limited(dir.path(), 256).await;
    let mut ids = Vec::new();
    for i in 0..PROCESSES {
        let p = create(s.addr, json!({"name": format!("p{i}")})).await;
        let id = p["id"].as_str().expect("id").to_owned();
        append(s.addr, &id, &format!("line of {i}\n")).await;
        ids.push(id);
    }
    assert!(
        s.fds() < 200,
        "the store keeps its logs' descriptors bounded: {} open",
        s.fds()
    );
    // Every kind of call still works with 300 logs written to.
    let extra = create(s.addr, json!({"name": "after"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    patch_json(
        s.addr,
        &format!("/api/processes/{}", ids[0]),
        &json!({"name": "renamed"}),
    )
    .await
    .expect(200);
    assert_eq!(output(s.addr, &ids[1]).await, "line of 1\n");
    // The first log's handle was evicted long ago: reopened, written at
    // its end.
    append(s.addr, &ids[2], "more\n").await;
    complete(s.addr, &ids[3]).await;
    delete(s.addr, &format!("/api/processes/{}", ids[4])).await.expect(204);
    get(s.addr, "/healthz").await.expect(200);
    s.stop().await;

    let s = BinServer::start(dir.path(), &[]).await;
    let list = get(s.addr, "/api/processes?limit=1000").await;
    assert_eq!(
        list.json().as_array().expect("array").len(),
        PROCESSES,
        "300 - 1 deleted + 1 created"
    );
    assert_eq!(
        get(s.addr, &format!("/api/processes/{}", ids[0])).await.json()["name"],
        "renamed"
    );
    assert_eq!(output(s.addr, &ids[2]).await, "line of 2\nmore\n");
    assert_eq!(
        get(s.addr, &format!("/api/processes/{}", ids[3])).await.json()["status"],
        "completed"
    );
    get(s.addr, &format!("/api/processes/{}", ids[4])).await.expect(404);
    get(s.addr, &format!("/api/processes/{extra}")).await.expect(200);
    for (i, id) in ids.iter().enumerate().skip(5).step_by(37) {
        assert_eq!(output(s.addr, id).await, format!("line of {i}\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bug_a_full_disk_answered_500_and_left_memory_and_disk_apart() {
    let fs = Tmpfs::mount("4m");
    let s = BinServer::start(&fs.data(), &[]).await;
    let a = create(s.addr, json!({"id": "a", "name": "a"})).await;
    append(s.addr, "a", "kept\n").await;
    create(s.addr, json!({"id": "b", "name": "b"})).await;
    let filler = fs.fill();

    let r = post_json(s.addr, "/api/processes", &json!({"id": "c", "name": "c"})).await;
    expect_fault(&r, 507, "insufficient_storage", "processes/");
    let r = patch_json(s.addr, "/api/processes/a", &json!({"name": "renamed"})).await;
    expect_fault(&r, 507, "insufficient_storage", "processes/");
    let r = patch_json(s.addr, "/api/processes/b", &json!({"status": "completed"})).await;
    expect_fault(&r, 507, "insufficient_storage", "processes/");
    let r = append_text(s.addr, "a", &"x".repeat(64 * 1024)).await;
    expect_fault(&r, 507, "insufficient_storage", "output/a.log");
    let r = post_json(s.addr, "/api/workspaces", &json!({"id": "w", "name": "w"})).await;
    expect_fault(&r, 507, "insufficient_storage", "workspaces/");
    // Nothing changed, and reads work.
    get(s.addr, "/api/processes/c").await.expect(404);
    let now = get(s.addr, "/api/processes/a").await.json();
    assert_eq!(
        (now["name"].clone(), now["output_bytes"].clone()),
        (a["name"].clone(), json!(5))
    );
    assert_eq!(get(s.addr, "/api/processes/b").await.json()["status"], "running");
    append(s.addr, "b", "").await;
    assert_eq!(output(s.addr, "a").await, "kept\n");

    std::fs::remove_file(&filler).expect("free the space");
    create(s.addr, json!({"id": "c", "name": "c"})).await;
    patch_json(s.addr, "/api/processes/a", &json!({"name": "renamed"}))
        .await
        .expect(200);
    append(s.addr, "a", "after\n").await;
    complete(s.addr, "b").await;
    delete(s.addr, "/api/processes/c").await.expect(204);
    s.stop().await;

    let s = BinServer::start(&fs.data(), &[]).await;
    assert_eq!(get(s.addr, "/api/processes/a").await.json()["name"], "renamed");
    assert_eq!(
        output(s.addr, "a").await,
        "kept\nafter\n",
        "no bytes of the failed append"
    );
    assert_eq!(get(s.addr, "/api/processes/b").await.json()["status"], "completed");
    get(s.addr, "/api/processes/c").await.expect(404);
    get(s.addr, "/api/workspaces/w").await.expect(404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bug_a_server_did_not_start_on_a_full_disk_it_could_still_serve_reads_from() {
    let fs = Tmpfs::mount("4m");
    let s = BinServer::start(&fs.data(), &[]).await;
    create(s.addr, json!({"id": "done", "name": "done"})).await;
    append(s.addr, "done", "output\n").await;
    complete(s.addr, "done").await;
    s.stop().await;
    // The start has writes to do: the default workspace, server.json, a
    // leftover temp file, an unreadable record to quarantine.
    std::fs::remove_file(fs.data().join("workspaces/default.json")).expect("remove default.json");
    std::fs::write(fs.data().join("processes/.tmp-leftover"), "{").expect("temp file");
    std::fs::write(fs.data().join("processes/broken.json"), "{").expect("broken record");
    fs.fill();

    let s = BinServer::start(&fs.data(), &[]).await;
    let list = get(s.addr, "/api/processes").await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(output(s.addr, "done").await, "output\n");
    let workspaces = get(s.addr, "/api/workspaces").await.json();
    assert!(
        workspaces
            .as_array()
            .expect("array")
            .iter()
            .any(|w| w["id"] == "default"),
        "{workspaces}"
    );
    let r = post_json(s.addr, "/api/processes", &json!({"name": "new"})).await;
    expect_fault(&r, 507, "insufficient_storage", "processes/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bug_a_read_only_data_folder_answered_500() {
    let fs = Tmpfs::mount("16m");
    let s = BinServer::start(&fs.data(), &[]).await;
    create(s.addr, json!({"id": "run", "name": "run"})).await;
    create(s.addr, json!({"id": "done", "name": "done"})).await;
    append(s.addr, "done", "output\n").await;
    complete(s.addr, "done").await;
    // The server holds no file open for writing (LOCK is locked through a
    // read-only descriptor, finished logs are closed): the remount works.
    fs.remount("ro");

    let r = post_json(s.addr, "/api/processes", &json!({"id": "new", "name": "new"})).await;
    expect_fault(&r, 503, "read_only", "processes/");
    let r = patch_json(s.addr, "/api/processes/run", &json!({"name": "renamed"})).await;
    expect_fault(&r, 503, "read_only", "processes/");
    let r = append_text(s.addr, "run", "line\n").await;
    expect_fault(&r, 503, "read_only", "output/run.log");
    let r = delete(s.addr, "/api/processes/done").await;
    expect_fault(&r, 503, "read_only", "processes/done.json");
    // Reads work, and nothing changed.
    assert_eq!(output(s.addr, "done").await, "output\n");
    assert_eq!(get(s.addr, "/api/processes/run").await.json()["name"], "run");
    get(s.addr, "/api/processes/new").await.expect(404);
    let list: Value = get(s.addr, "/api/processes").await.json();
    assert_eq!(list.as_array().map(Vec::len), Some(2));

    fs.remount("rw");
    append(s.addr, "run", "line\n").await;
    delete(s.addr, "/api/processes/done").await.expect(204);
    s.stop().await;

    let s = BinServer::start(&fs.data(), &[]).await;
    assert_eq!(output(s.addr, "run").await, "line\n");
    assert_eq!(get(s.addr, "/api/processes/run").await.json()["status"], "running");
    get(s.addr, "/api/processes/done").await.expect(404);
    get(s.addr, "/api/processes/new").await.expect(404);
}
