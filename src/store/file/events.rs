//! The store-level stream of lifecycle events (process-added/updated/
//! removed, workspace-added/removed): numbered, kept in one ring bounded
//! in count and in bytes, and delivered from that ring.
//!
//! # Why live delivery reads the ring
//! Events carry whole records, and a `result` may be as large as a request
//! body. A live `broadcast` channel next to the replay ring kept its own
//! 4,096 events for its slowest receiver: one `/ws` client that never read
//! pinned them all, whatever the ring's byte cap (1.8 GB measured with
//! 256 KiB results, ~8 GiB worst case). Now there is one buffer: a
//! [`Subscription`] is a position in the ring, woken through a `watch`
//! channel when an event is pushed. A subscriber whose next event was
//! evicted has lagged: it is told so (the server sends `reset`, or closes
//! a WebSocket with 1013) and goes on from the newest event. So the memory
//! held for events is the ring's cap, however many subscribers stall.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock, RwLock};

use bytes::Bytes;

use serde::Serialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::watch;

use super::Clock;
use crate::model::{EventKind, Id, LifecycleEvent, Process, Timestamp, Workspace, ts};

/// Most events the ring keeps, for replay after a reconnect and for live
/// subscribers behind the newest event (it was also the live channel's
/// capacity: a subscriber this far behind lags).
pub const EVENT_RING: usize = 4096;
/// Most bytes of events the ring keeps (their JSON and its SSE encoding):
/// events carry whole records (a `result` may be up to a request body,
/// 1 MiB by default), and 4,096 of those must not pin gigabytes. Older
/// events go first; a subscriber or a reconnect from before them gets
/// `reset`.
pub const EVENT_RING_BYTES: usize = 32 * 1024 * 1024;

/// Bytes an SSE encoding adds to an event's JSON (`id:`, `event:`,
/// `data:` and line ends), for the ring's accounting.
const ENCODING_OVERHEAD: usize = 128;

/// One numbered event, serialized once for every subscriber. Holds the
/// record only as JSON (it used to keep the record struct as well, twice
/// the memory per event), plus what filters need.
#[derive(Debug)]
pub struct SeqEvent {
    /// 1, 2, 3… within this store's epoch.
    pub seq: u64,
    pub kind: EventKind,
    /// The workspace the event belongs to (for `?workspace=` filters).
    pub workspace: Id,
    /// The process of a process event.
    pub process: Option<Id>,
    /// The event as compact JSON: what `/ws` and `/api/events` send.
    pub json: String,
    /// The event's SSE text, encoded once by the server for every
    /// `/api/events` subscriber (shared, so N subscribers holding a frame
    /// of it hold one copy, not N). The ring counts it in its bytes.
    pub encoded: OnceLock<Bytes>,
}

impl SeqEvent {
    /// What this event counts against [`EVENT_RING_BYTES`]: its JSON, and
    /// its SSE encoding (the JSON plus a line or two), encoded or not.
    fn cost(&self) -> usize {
        2 * self.json.len() + ENCODING_OVERHEAD
    }

    /// The event parsed back from its JSON (for callers that need the
    /// record; the server sends `json` as it is).
    pub fn event(&self) -> LifecycleEvent {
        serde_json::from_str(&self.json).expect("the store wrote this JSON from a LifecycleEvent")
    }
}

/// [`LifecycleEvent`] by reference, so publishing serializes the record
/// without cloning it. Same fields and serde attributes (a unit test pins
/// that the JSON reads back as a `LifecycleEvent`).
#[derive(Serialize)]
struct EventRef<'a> {
    #[serde(rename = "type")]
    kind: EventKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    process: Option<&'a Process>,
    #[serde(skip_serializing_if = "Option::is_none")]
    workspace: Option<&'a Workspace>,
    #[serde(with = "ts")]
    timestamp: Timestamp,
}

/// What a reconnecting subscriber gets; its [`Subscription`] then starts
/// with the events it missed (if any), or at the newest event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Its position is in the ring: the subscription replays from there.
    Replay,
    /// Its position cannot be served (other epoch, or older than the ring):
    /// it must re-list. The subscription starts with the next new event.
    Reset,
}

pub struct Events {
    /// Changes at every open, so ids from a previous run are recognised.
    epoch: String,
    /// The ring and the sequence counter, shared with every subscription.
    ring: Arc<RwLock<Ring>>,
    /// Wakes subscriptions: the seq of the newest event. Dropped with the
    /// store, which ends every subscription (`Closed`).
    wake: watch::Sender<u64>,
    /// The store's clock, for event timestamps (regression: they used the
    /// real clock while records used the store's).
    clock: Clock,
}

/// Behind a std RwLock: written while numbering and pushing one event,
/// read while a subscriber copies out one `Arc` (many subscribers read at
/// once); never held across an `.await`. Seq order == ring order, and a
/// position taken under it sees no gap.
struct Ring {
    next_seq: u64,
    recent: VecDeque<Arc<SeqEvent>>,
    /// Sum of `SeqEvent::cost` over `recent`.
    bytes: usize,
}

impl Ring {
    /// Seq of the oldest event kept (== `next_seq` when empty).
    fn oldest(&self) -> u64 {
        self.recent.front().map_or(self.next_seq, |e| e.seq)
    }

    fn push(&mut self, ev: Arc<SeqEvent>) {
        // Regression: the ring was bounded by count only, so 1024 events
        // carrying large records pinned up to ~2 GiB (record + JSON each).
        while self.recent.len() >= EVENT_RING || (!self.recent.is_empty() && self.bytes + ev.cost() > EVENT_RING_BYTES)
        {
            let old = self.recent.pop_front().expect("not empty");
            self.bytes -= old.cost();
        }
        self.bytes += ev.cost();
        self.recent.push_back(ev);
    }
}

impl Events {
    /// Events stamped with the real clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(crate::model::now))
    }

    /// Events stamped with `clock` (the store passes its own).
    pub fn with_clock(clock: Clock) -> Self {
        Events {
            epoch: crate::model::Id::generate().into_string(),
            ring: Arc::new(RwLock::new(Ring {
                next_seq: 1,
                recent: VecDeque::new(),
                bytes: 0,
            })),
            wake: watch::channel(0).0,
            clock,
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Ring> {
        crate::sync::read(&self.ring)
    }

    fn publish(&self, kind: EventKind, workspace: Id, process: Option<&Process>, ws: Option<&Workspace>) {
        let event = EventRef {
            kind,
            process,
            workspace: ws,
            timestamp: (self.clock)(),
        };
        let json = serde_json::to_string(&event).expect("lifecycle events always serialize");
        crate::metrics::get().lifecycle_event(kind);
        let process = process.map(|p| p.id.clone());
        let seq = {
            let mut ring = crate::sync::write(&self.ring);
            let seq = ring.next_seq;
            ring.next_seq += 1;
            ring.push(Arc::new(SeqEvent {
                seq,
                kind,
                workspace,
                process,
                json,
                encoded: OnceLock::new(),
            }));
            seq
        };
        // After the push, so a woken subscriber finds the event. Always
        // stored, receivers or not.
        self.wake.send_replace(seq);
    }

    pub fn process(&self, kind: EventKind, p: &Process) {
        self.publish(kind, p.workspace.clone(), Some(p), None);
    }

    pub fn workspace(&self, kind: EventKind, w: &Workspace) {
        self.publish(kind, w.id.clone(), None, Some(w));
    }

    /// A live subscription: events published from now on.
    pub fn subscribe(&self) -> Subscription {
        let next = self.read().next_seq;
        self.subscription(next)
    }

    fn subscription(&self, next: u64) -> Subscription {
        Subscription {
            ring: self.ring.clone(),
            wake: self.wake.subscribe(),
            next,
        }
    }

    /// A subscription that starts after `last` (`EPOCH-SEQ` as sent in SSE
    /// ids) if the ring still holds what came after it, else from now on
    /// with [`Resume::Reset`].
    pub fn resume(&self, last: &str) -> (Resume, Subscription) {
        let ring = self.read();
        let parsed = last
            .rsplit_once('-')
            .filter(|(epoch, _)| *epoch == self.epoch)
            .and_then(|(_, seq)| seq.parse::<u64>().ok());
        let (resume, next) = match parsed {
            Some(seq) if seq < ring.next_seq && seq + 1 >= ring.oldest() => (Resume::Replay, seq + 1),
            _ => (Resume::Reset, ring.next_seq),
        };
        drop(ring);
        (resume, self.subscription(next))
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

/// A subscriber's position in the ring. Holds no event: a subscriber that
/// stops reading costs this struct, nothing more. The methods mirror
/// `tokio::sync::broadcast::Receiver` (and use its error types): `Lagged(n)`
/// says `n` events were skipped, after which delivery goes on from the
/// next new event.
pub struct Subscription {
    ring: Arc<RwLock<Ring>>,
    wake: watch::Receiver<u64>,
    /// Seq of the next event to deliver.
    next: u64,
}

impl Subscription {
    /// The next event without waiting.
    pub fn try_recv(&mut self) -> Result<Arc<SeqEvent>, TryRecvError> {
        let ring = crate::sync::read(&self.ring);
        if self.next < ring.oldest() {
            let skipped = ring.next_seq - self.next;
            self.next = ring.next_seq;
            return Err(TryRecvError::Lagged(skipped));
        }
        if self.next < ring.next_seq {
            let ev = ring.recent[(self.next - ring.oldest()) as usize].clone();
            self.next += 1;
            return Ok(ev);
        }
        drop(ring);
        match self.wake.has_changed() {
            Ok(_) => Err(TryRecvError::Empty),
            Err(_) => Err(TryRecvError::Closed),
        }
    }

    /// The next event, waiting for it. Cancel-safe: the position moves only
    /// when an event (or a lag) is returned.
    pub async fn recv(&mut self) -> Result<Arc<SeqEvent>, RecvError> {
        loop {
            // Marked seen before looking, so a push after the look wakes us.
            self.wake.borrow_and_update();
            match self.try_recv() {
                Ok(ev) => return Ok(ev),
                Err(TryRecvError::Lagged(n)) => return Err(RecvError::Lagged(n)),
                Err(TryRecvError::Closed) => return Err(RecvError::Closed),
                Err(TryRecvError::Empty) => {}
            }
            if self.wake.changed().await.is_err() {
                return Err(RecvError::Closed);
            }
        }
    }

    /// Whether the next event to deliver has been evicted already.
    pub fn is_lagged(&self) -> bool {
        self.next < crate::sync::read(&self.ring).oldest()
    }

    /// Completes once this subscriber has lagged (never, if the store
    /// closes first). For a sender blocked on a client that stopped
    /// reading: it can give up on it without draining.
    pub async fn lagged(&self) {
        let mut wake = self.wake.clone();
        loop {
            wake.borrow_and_update();
            if self.is_lagged() {
                return;
            }
            if wake.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
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

    fn drain(sub: &mut Subscription) -> Vec<u64> {
        std::iter::from_fn(|| sub.try_recv().ok()).map(|e| e.seq).collect()
    }

    #[test]
    fn resume_replays_missed_events_and_resets_otherwise() {
        let ev = Events::new();
        for i in 0..5 {
            ev.workspace(EventKind::WorkspaceAdded, &ws(&format!("w{i}")));
        }
        let (r, mut sub) = ev.resume(&format!("{}-2", ev.epoch()));
        assert_eq!(r, Resume::Replay);
        assert_eq!(drain(&mut sub), [3, 4, 5]);
        assert_eq!(ev.resume("OTHER-2").0, Resume::Reset);
        assert_eq!(ev.resume("garbage").0, Resume::Reset);
        for i in 0..EVENT_RING + 10 {
            ev.workspace(EventKind::WorkspaceAdded, &ws(&format!("x{i}")));
        }
        assert_eq!(ev.resume(&format!("{}-2", ev.epoch())).0, Resume::Reset);
    }

    #[test]
    fn a_subscriber_behind_the_ring_lags_then_goes_on_live() {
        let ev = Events::new();
        let mut slow = ev.subscribe();
        for i in 0..EVENT_RING + 1 {
            ev.workspace(EventKind::WorkspaceAdded, &ws(&format!("w{i}")));
        }
        assert!(slow.is_lagged());
        match slow.try_recv() {
            Err(TryRecvError::Lagged(n)) => assert_eq!(n, EVENT_RING as u64 + 1),
            other => panic!("expected a lag, got {other:?}"),
        }
        assert!(matches!(slow.try_recv(), Err(TryRecvError::Empty)));
        ev.workspace(EventKind::WorkspaceAdded, &ws("after"));
        assert_eq!(drain(&mut slow), [EVENT_RING as u64 + 2]);
    }

    #[test]
    fn event_json_reads_back_as_the_model_type() {
        let ev = Events::new();
        let mut sub = ev.subscribe();
        let w = ws("w1");
        ev.workspace(EventKind::WorkspaceAdded, &w);
        let got = sub.try_recv().expect("published");
        let parsed = got.event();
        assert_eq!(parsed.kind, EventKind::WorkspaceAdded);
        assert_eq!(parsed.workspace.as_ref(), Some(&w));
        assert_eq!(parsed.process, None);
        assert_eq!(serde_json::to_string(&parsed).expect("serializes"), got.json);
        assert_eq!(got.workspace, "w1");
    }

    #[tokio::test]
    async fn recv_wakes_on_publish_and_ends_when_the_store_closes() {
        let ev = Events::new();
        let mut sub = ev.subscribe();
        let waiter = tokio::spawn(async move {
            let first = sub.recv().await.map(|e| e.seq);
            (first, sub.recv().await.map(|e| e.seq))
        });
        tokio::task::yield_now().await;
        ev.workspace(EventKind::WorkspaceAdded, &ws("w1"));
        drop(ev);
        let (first, second) = waiter.await.expect("no panic");
        assert_eq!(first, Ok(1));
        assert_eq!(second, Err(RecvError::Closed));
    }
}
