//! Retention: prune by age and count, only finished processes, with their
//! output; the periodic prune.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use chrono::TimeDelta;
use prochub::model::{Process, ProcessPatch, Status, Timestamp};
use prochub::store::{FileProcessStore, Retention};
use tokio_util::sync::CancellationToken;

use crate::helper::{TestClock, running, t0, wait_until};

/// Writes a record (and a log) straight into a store folder, with explicit
/// timestamps, as an older server would have left it.
fn plant(dir: &Path, id: &str, status: Status, created: Timestamp, ended: Option<Timestamp>) {
    let p = Process {
        id: prochub::model::Id::parse(id).unwrap(),
        workspace: prochub::model::Id::default_workspace(),
        name: format!("proc {id}"),
        status,
        created_at: created,
        updated_at: ended.unwrap_or(created),
        started_at: Some(created),
        ended_at: ended,
        duration: None,
        result: None,
        error: None,
        metadata: Default::default(),
        command: None,
        exit_code: None,
        exit_signal: None,
        output_bytes: 3,
        output_truncated: false,
        output_elided: 0,
    };
    for sub in ["processes", "output"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    std::fs::write(
        dir.join(format!("processes/{id}.json")),
        serde_json::to_vec_pretty(&p).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.join(format!("output/{id}.log")), b"out").unwrap();
}

fn ids_on_disk(dir: &Path, sub: &str) -> BTreeSet<String> {
    std::fs::read_dir(dir.join(sub))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            // `output/SEQ` (the SEQ floor) is no process's file.
            name.rsplit_once('.').map(|(stem, _)| stem.to_owned())
        })
        .collect()
}

fn hours(h: f64) -> TimeDelta {
    TimeDelta::milliseconds((h * 3_600_000.0) as i64)
}

#[tokio::test]
async fn prune_keeps_at_most_max_count_inside_max_age_and_never_touches_running() {
    let dir = tempfile::tempdir().unwrap();
    let now = t0();
    let terminal = [Status::Completed, Status::Failed, Status::Cancelled];
    // 150 finished processes, one ending every 1.5 h back from now: 112 end
    // inside 7 days, 38 before.
    for i in 0..150 {
        let ended = now - hours(1.5 * i as f64) - TimeDelta::minutes(1);
        plant(
            dir.path(),
            &format!("done{i:03}"),
            terminal[i % 3],
            ended - hours(1.0),
            Some(ended),
        );
    }
    // Old processes still going: never pruned, however old.
    for (i, status) in [Status::Running, Status::Queued, Status::Running]
        .into_iter()
        .enumerate()
    {
        plant(dir.path(), &format!("live{i}"), status, now - TimeDelta::days(60), None);
    }
    let clock = TestClock::at(now);
    let store = FileProcessStore::open(dir.path(), clock.config()).await.unwrap();
    let week: Retention = Retention {
        max_age: Some(humantime::parse_duration("7d").unwrap()),
        max_count: Some(100),
    };

    let removed = store.prune(week).await.unwrap();
    assert_eq!(removed, 50, "38 too old, then 12 more past the newest 100");
    let kept: Vec<Process> = store
        .list_processes(&Default::default())
        .unwrap()
        .items
        .into_iter()
        .filter(|p| p.status.is_terminal())
        .collect();
    assert_eq!(kept.len(), 100);
    let expected: BTreeSet<String> = (0..100).map(|i| format!("done{i:03}")).collect();
    assert_eq!(
        kept.iter().map(|p| p.id.to_string()).collect::<BTreeSet<_>>(),
        expected,
        "the newest 100 stay"
    );
    for p in &kept {
        assert!(
            now - p.ended_at.unwrap() <= TimeDelta::days(7),
            "{} is outside the window",
            p.id
        );
    }
    for i in 0..3 {
        let p = store
            .get_process(&crate::helper::id(&format!("live{i}")))
            .expect("running/queued processes are never pruned");
        assert!(!p.status.is_terminal());
    }
    // Disk agrees: records and their output are gone together.
    let mut on_disk = expected.clone();
    on_disk.extend((0..3).map(|i| format!("live{i}")));
    assert_eq!(ids_on_disk(dir.path(), "processes"), on_disk);
    assert_eq!(ids_on_disk(dir.path(), "output"), on_disk);

    // Two days later the age limit bites alone: ended more than 7 days ago
    // now means i * 1.5 h + 1 min > 120 h, i.e. i >= 80.
    clock.set(now + TimeDelta::days(2));
    let removed = store.prune(week).await.unwrap();
    assert_eq!(removed, 20);
    assert_eq!(store.process_count(), 80 + 3);
    assert_eq!(store.prune(week).await.unwrap(), 0, "prune is idempotent");
    assert_eq!(
        store.prune(Retention::default()).await.unwrap(),
        0,
        "no policy, no removal"
    );
    // max_count 0 removes every finished process and nothing else.
    let all = Retention {
        max_age: None,
        max_count: Some(0),
    };
    assert_eq!(store.prune(all).await.unwrap(), 80);
    assert_eq!(store.process_count(), 3);
}

/// On the paused clock, with the interval `serve` uses: the first prune
/// runs at once, the next one only a whole interval later.
#[tokio::test(start_paused = true)]
async fn periodic_retention_prunes_until_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let now = t0();
    for i in 0..5 {
        plant(
            dir.path(),
            &format!("old{i}"),
            Status::Completed,
            now - TimeDelta::days(30),
            Some(now - TimeDelta::days(29)),
        );
    }
    let clock = TestClock::at(now);
    let store = FileProcessStore::open(dir.path(), clock.config()).await.unwrap();
    let cancel = CancellationToken::new();
    let policy = Retention {
        max_age: Some(Duration::from_secs(7 * 86_400)),
        max_count: None,
    };
    // What `prochub serve` uses (`cli::serve::RETENTION_EVERY`).
    let every = Duration::from_secs(60);
    let started = tokio::time::Instant::now();
    let task = store.spawn_retention(policy, every, cancel.clone());
    wait_until("the periodic prune ran", Duration::from_secs(5), async || {
        store.process_count() == 0
    })
    .await;

    // A process that ends now is too old a week later, but only the next
    // tick prunes it.
    let id = running(&store, "recent").await;
    store
        .update_process(&id, ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    clock.set(now + TimeDelta::days(8));
    tokio::time::sleep_until(started + every - Duration::from_millis(1)).await;
    assert_eq!(store.process_count(), 1, "no prune between two ticks");
    wait_until("the next tick pruned", Duration::from_secs(1), async || {
        store.process_count() == 0
    })
    .await;

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the retention task ends on cancel")
        .unwrap();
}
