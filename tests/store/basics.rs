//! The store end to end in its simplest use: a process, its output, a
//! follower, completion; and the emitter gone afterwards.

use prochub::model::{NewProcess, ProcessPatch, Status};
use prochub::store::FollowEvent;

use crate::helper::temp_store;

#[tokio::test]
async fn three_chunks_in_order_then_completion_and_no_emitter_left() {
    let (_dir, store) = temp_store().await;
    let p = store
        .create_process(NewProcess {
            name: "build".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut follow = store.subscribe(&p.id, None).unwrap();
    assert_eq!(store.emitter_count(), 1);
    for part in ["one\n", "two\n", "three\n"] {
        store.append_output(&p.id, part.into(), None).await.unwrap();
    }
    store
        .update_process(&p.id, ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    let mut got = String::new();
    let mut status = None;
    while let Some(ev) = follow.next().await {
        match ev {
            FollowEvent::Chunk(c) => got.push_str(&c.content),
            FollowEvent::Status(s) => status = Some(s.status),
            FollowEvent::Lagged { .. } => panic!("nothing may be skipped"),
        }
    }
    assert_eq!(got, "one\ntwo\nthree\n");
    assert_eq!(status, Some(Status::Completed));
    assert_eq!(store.emitter_count(), 0);
}
