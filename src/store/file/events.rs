//! The store-level broadcast of lifecycle events (process-added/updated/
//! removed, workspace-added/removed), numbered, with a bounded ring of recent
//! events so a reconnecting client can be given what it missed.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use super::Clock;
use crate::model::{EventKind, LifecycleEvent, Process, Workspace};

/// Events kept for replay after a reconnect.
pub const EVENT_RING: usize = 1024;
/// Most bytes of event JSON the replay ring keeps: events carry whole
/// records (a `result` may be up to a request body, 1 MiB by default), and
/// 1024 of those must not pin a gigabyte. Older events go first; a
/// reconnect from before them gets `reset`.
pub const EVENT_RING_BYTES: usize = 32 * 1024 * 1024;
/// Capacity of the live broadcast; a subscriber further behind than this is
/// told it lagged (the server then sends `reset`).
pub const EVENT_CHANNEL: usize = 4096;

/// One numbered event, serialized once for every subscriber.
#[derive(Debug)]
pub struct SeqEvent {
    /// 1, 2, 3… within this store's epoch.
    pub seq: u64,
    pub event: LifecycleEvent,
    /// `event` as compact JSON.
    pub json: String,
}

/// What a reconnecting subscriber gets.
pub enum Resume {
    /// The events after the one it last saw, in order (maybe none).
    Replay(Vec<Arc<SeqEvent>>),
    /// Its position cannot be served (other epoch, or older than the ring):
    /// it must re-list.
    Reset,
}

pub struct Events {
    /// Changes at every open, so ids from a previous run are recognised.
    epoch: String,
    tx: broadcast::Sender<Arc<SeqEvent>>,
    /// The ring and the sequence counter. std Mutex held while numbering,
    /// pushing and sending one event, so seq order == send order == ring
    /// order, and a subscriber taken under it sees no gap with the ring.
    ring: Mutex<Ring>,
    /// The store's clock, for event timestamps (regression: they used the
    /// real clock while records used the store's).
    clock: Clock,
}

struct Ring {
    next_seq: u64,
    recent: VecDeque<Arc<SeqEvent>>,
    /// Sum of `json.len()` over `recent`.
    bytes: usize,
}

impl Events {
    /// Events stamped with the real clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(crate::model::now))
    }

    /// Events stamped with `clock` (the store passes its own).
    pub fn with_clock(clock: Clock) -> Self {
        let (tx, _) = broadcast::channel(EVENT_CHANNEL);
        Events {
            epoch: crate::model::Id::generate().into_string(),
            tx,
            ring: Mutex::new(Ring {
                next_seq: 1,
                recent: VecDeque::with_capacity(EVENT_RING),
                bytes: 0,
            }),
            clock,
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Ring> {
        crate::sync::lock(&self.ring)
    }

    pub fn publish(&self, kind: EventKind, process: Option<Process>, workspace: Option<Workspace>) {
        let event = LifecycleEvent {
            kind,
            process,
            workspace,
            timestamp: (self.clock)(),
        };
        let json = serde_json::to_string(&event).expect("lifecycle events always serialize");
        crate::metrics::get().lifecycle_event(kind);
        let mut ring = self.lock();
        let seq = ring.next_seq;
        ring.next_seq += 1;
        let ev = Arc::new(SeqEvent { seq, event, json });
        // Regression: the ring was bounded by count only, so 1024 events
        // carrying large records pinned up to ~2 GiB (record + JSON each).
        while ring.recent.len() >= EVENT_RING
            || (!ring.recent.is_empty() && ring.bytes + ev.json.len() > EVENT_RING_BYTES)
        {
            let old = ring.recent.pop_front().expect("not empty");
            ring.bytes -= old.json.len();
        }
        ring.bytes += ev.json.len();
        ring.recent.push_back(ev.clone());
        // No receivers is fine: nobody is listening.
        let _ = self.tx.send(ev);
    }

    pub fn process(&self, kind: EventKind, p: &Process) {
        self.publish(kind, Some(p.clone()), None);
    }

    pub fn workspace(&self, kind: EventKind, w: &Workspace) {
        self.publish(kind, None, Some(w.clone()));
    }

    /// A live subscription.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<SeqEvent>> {
        self.tx.subscribe()
    }

    /// A live subscription plus what was missed since `last` (`EPOCH-SEQ`
    /// as sent in SSE ids), taken atomically so nothing falls in between.
    pub fn resume(&self, last: &str) -> (Resume, broadcast::Receiver<Arc<SeqEvent>>) {
        let ring = self.lock();
        let rx = self.tx.subscribe();
        let parsed = last
            .rsplit_once('-')
            .filter(|(epoch, _)| *epoch == self.epoch)
            .and_then(|(_, seq)| seq.parse::<u64>().ok());
        let resume = match parsed {
            Some(seq) if seq < ring.next_seq => {
                let oldest = ring.recent.front().map_or(ring.next_seq, |e| e.seq);
                if seq + 1 >= oldest {
                    Resume::Replay(ring.recent.iter().filter(|e| e.seq > seq).cloned().collect())
                } else {
                    Resume::Reset
                }
            }
            _ => Resume::Reset,
        };
        (resume, rx)
    }

    /// `EPOCH-SEQ`, the SSE id of an event.
    pub fn id_of(&self, ev: &SeqEvent) -> String {
        format!("{}-{}", self.epoch, ev.seq)
    }
}

impl Default for Events {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Workspace;

    fn ws(id: &str) -> Workspace {
        Workspace {
            id: crate::model::Id::parse(id).expect("test ids are valid"),
            name: id.into(),
            root_path: None,
            created_at: crate::model::now(),
        }
    }

    #[test]
    fn resume_replays_missed_events_and_resets_otherwise() {
        let ev = Events::new();
        for i in 0..5 {
            ev.workspace(EventKind::WorkspaceAdded, &ws(&format!("w{i}")));
        }
        let (r, _rx) = ev.resume(&format!("{}-2", ev.epoch()));
        match r {
            Resume::Replay(v) => assert_eq!(v.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4, 5]),
            Resume::Reset => panic!("expected replay"),
        }
        assert!(matches!(ev.resume("OTHER-2").0, Resume::Reset));
        assert!(matches!(ev.resume("garbage").0, Resume::Reset));
        for i in 0..EVENT_RING + 10 {
            ev.workspace(EventKind::WorkspaceAdded, &ws(&format!("x{i}")));
        }
        assert!(matches!(ev.resume(&format!("{}-2", ev.epoch())).0, Resume::Reset));
    }
}
