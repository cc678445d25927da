//! [`WorkspaceClient`], what an editor extension keeps for the folder it
//! has open (its [`WorkspaceIdentity`]): submit / update / remove that keep
//! working while the server is away (the [`OfflineQueue`]).
//!
//! # Offline rules
//! * Once a request finds the server unreachable, the client is offline:
//!   that request and every later one go to the queue file, in order, and
//!   no request is attempted until [`WorkspaceClient::flush`].
//! * A client opened on a non-empty queue starts offline (the queue must
//!   drain first, or order would break).
//! * `flush` sends the queue front to back, removing each entry from the
//!   file only once the server acknowledged it. A create answered 409 with
//!   the stored record was delivered by an earlier, interrupted flush; a
//!   remove answered 404 is done too. A server error (5xx, 429) stops the
//!   flush like an unreachable server; a 401 stops it with the error (the
//!   token is wrong, not the entry). Any other refusal (400, a 409 on a
//!   status move) cannot succeed by retrying: the entry is dropped and
//!   reported in [`FlushReport::rejected`].
//! * An append records the offset where the output was to end before it
//!   (`at`), when this client knows it: it does for processes it submitted
//!   and after any append it made, since each answer says where the output
//!   ends. It is sent as `?at=N`, so a repeated flush cannot store it twice:
//!   the server answers 409 `offset_mismatch`. A flush takes that as
//!   delivered when the output ends exactly after the append (the rule of
//!   [`super::output`]) or, further on (later queued appends were stored
//!   too), when the stored bytes at `at` are the append's content; any
//!   other mismatch is a rejection. An append queued without `at` (the
//!   client never learnt where the output ended) is sent as before, and a
//!   flush interrupted right after it may repeat it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};

use super::error::ClientError;
use super::identity::WorkspaceIdentity;
use super::queue::{OfflineQueue, QueuedOp};
use super::transport::Client;
use crate::model::{NewProcess, Process, ProcessPatch, StreamKind};

/// What became of a submit, update or remove.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The server has it; this is the record it answered with.
    Sent(Box<Process>),
    /// The server is unreachable: kept in the offline queue.
    Queued,
    /// An update that changed nothing: no request was needed.
    Unchanged,
    /// A remove the server acknowledged (or that found nothing to remove).
    Removed,
    /// An append the server stored; the output now ends at `output_bytes`.
    Appended { output_bytes: u64 },
}

/// What a flush did.
#[derive(Debug, Default)]
pub struct FlushReport {
    /// Entries the server acknowledged (including 409-existing creates).
    pub sent: usize,
    /// Entries the server refused for good, with the reason; dropped.
    pub rejected: Vec<(QueuedOp, ClientError)>,
    /// Entries still queued: the server went away again mid-flush (or
    /// answered with a server error).
    pub remaining: usize,
}

/// The last state of a process this client knows, to send only changes:
/// its editable fields, held as the create body they would make. An empty
/// `name` means "not known" (names are never empty).
#[derive(Debug, Clone, Default)]
struct Known(NewProcess);

impl Known {
    fn from_record(p: &Process) -> Self {
        Known(NewProcess {
            name: p.name.clone(),
            status: Some(p.status),
            result: p.result.clone(),
            error: p.error.clone(),
            metadata: Some(p.metadata.clone()),
            exit_code: p.exit_code,
            ..Default::default()
        })
    }

    fn from_new(p: &NewProcess) -> Self {
        Known(NewProcess {
            name: p.name.clone(),
            status: Some(p.status.unwrap_or_default()),
            result: p.result.clone(),
            error: p.error.clone(),
            metadata: Some(p.metadata.clone().unwrap_or_default()),
            exit_code: p.exit_code,
            ..Default::default()
        })
    }

    /// `desired` minus what is already so.
    fn diff(&self, desired: ProcessPatch) -> ProcessPatch {
        let known = &self.0;
        let same_result = |v: &Value| match &known.result {
            None => v.is_null(),
            Some(r) => r == v,
        };
        let metadata = known.metadata.as_ref();
        ProcessPatch {
            // An empty name is never the known one: the server judges it.
            name: desired.name.filter(|n| n.is_empty() || *n != known.name),
            status: desired.status.filter(|s| known.status != Some(*s)),
            result: desired.result.filter(|v| !same_result(v)),
            error: desired.error.filter(|e| *e != known.error),
            exit_code: desired.exit_code.filter(|c| *c != known.exit_code),
            exit_signal: None, // server-set, never in a client's patch
            metadata: desired.metadata.and_then(|m| match m {
                Value::Object(m) => {
                    let changed: Map<String, Value> = m
                        .into_iter()
                        .filter(|(k, v)| match (metadata.and_then(|old| old.get(k)), v) {
                            (None, Value::Null) => false,
                            (Some(old), v) => old != v,
                            (None, _) => true,
                        })
                        .collect();
                    (!changed.is_empty()).then_some(Value::Object(changed))
                }
                Value::Null if metadata.is_none_or(Map::is_empty) => None,
                other => Some(other),
            }),
        }
    }

    /// Applies a patch that was sent or queued, as the server will
    /// ([`ProcessPatch::apply_to_new`], the model's one merge).
    fn apply(&mut self, patch: &ProcessPatch) {
        if let Err(e) = patch.apply_to_new(&mut self.0) {
            // The server refuses such a patch too; what we know stays valid.
            tracing::debug!(%e, "a patch this client sent cannot apply");
        }
    }
}

fn is_empty_patch(p: &ProcessPatch) -> bool {
    *p == ProcessPatch::default()
}

/// State of a [`WorkspaceClient`] between calls.
struct State {
    /// Requests go to the queue without being attempted.
    offline: bool,
    /// The workspace is registered on the server (since the last
    /// reconnect; registering again is harmless).
    registered: bool,
    known: HashMap<String, Known>,
    /// Where the output of a process ends as far as this client knows
    /// (after its own appends, sent or queued): the next append's `at`.
    /// Forgotten after a mismatch (someone else writes there too).
    ends: HashMap<String, u64>,
}

/// The client an editor extension keeps for one open workspace.
pub struct WorkspaceClient {
    client: Client,
    identity: WorkspaceIdentity,
    /// The queue file. std Mutex, held by a `spawn_blocking` task while it
    /// locks, reads and rewrites the file, and on the async side only to
    /// copy the in-memory entries; never across an `.await`. The async side
    /// cannot wait long: every blocking task is awaited under `state`
    /// before the next operation starts.
    queue: Arc<Mutex<OfflineQueue>>,
    /// Serialises submit/update/remove/flush so requests keep the order in
    /// which they were made. tokio Mutex: held across the HTTP request.
    state: tokio::sync::Mutex<State>,
}

impl WorkspaceClient {
    /// A client for the workspace at `folder`, keeping its offline queue in
    /// `queue_path`. Nothing is sent yet.
    pub fn open(client: Client, folder: impl AsRef<Path>, queue_path: impl Into<PathBuf>) -> Result<Self, ClientError> {
        let identity = WorkspaceIdentity::for_path(folder)?;
        Self::with_identity(client, identity, queue_path)
    }

    pub fn with_identity(
        client: Client,
        identity: WorkspaceIdentity,
        queue_path: impl Into<PathBuf>,
    ) -> Result<Self, ClientError> {
        let queue = OfflineQueue::open(queue_path)?;
        let offline = !queue.is_empty();
        Ok(WorkspaceClient {
            client,
            identity,
            queue: Arc::new(Mutex::new(queue)),
            state: tokio::sync::Mutex::new(State {
                offline,
                registered: false,
                known: HashMap::new(),
                ends: HashMap::new(),
            }),
        })
    }

    pub fn identity(&self) -> &WorkspaceIdentity {
        &self.identity
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Whether requests currently go to the queue.
    pub async fn is_offline(&self) -> bool {
        self.state.lock().await.offline
    }

    /// The queued requests, in order (as of this client's last queue
    /// operation).
    pub fn queued(&self) -> Vec<QueuedOp> {
        self.lock_queue().entries().iter().map(|e| e.op.clone()).collect()
    }

    fn lock_queue(&self) -> std::sync::MutexGuard<'_, OfflineQueue> {
        crate::sync::lock(&self.queue)
    }

    /// Registers a process in this workspace. The id is chosen here (a
    /// ULID) unless given, so a create retried from the queue is safe.
    pub async fn submit(&self, mut new: NewProcess) -> Result<(String, Delivery), ClientError> {
        let id = new
            .id
            .get_or_insert_with(|| crate::model::Id::generate().into_string())
            .clone();
        new.workspace = Some(self.identity.id.clone());
        let mut st = self.state.lock().await;
        st.known.insert(id.clone(), Known::from_new(&new));
        let delivery = self.deliver(&mut st, QueuedOp::Create { process: new }).await?;
        let end = match &delivery {
            Delivery::Sent(p) => {
                st.known.insert(id.clone(), Known::from_record(p));
                p.output_bytes
            }
            _ => 0, // a new process has no output yet
        };
        st.ends.insert(id.clone(), end);
        Ok((id, delivery))
    }

    /// Updates a process, sending only the fields that differ from what
    /// this client last sent or saw (nothing at all if none do).
    pub async fn update(&self, id: &str, desired: ProcessPatch) -> Result<Delivery, ClientError> {
        let mut st = self.state.lock().await;
        let patch = match st.known.get(id) {
            Some(k) => k.diff(desired),
            None => desired,
        };
        if is_empty_patch(&patch) {
            return Ok(Delivery::Unchanged);
        }
        let delivery = self
            .deliver(
                &mut st,
                QueuedOp::Update {
                    id: id.to_owned(),
                    patch: patch.clone(),
                },
            )
            .await?;
        match &delivery {
            Delivery::Sent(p) => {
                st.known.insert(id.to_owned(), Known::from_record(p));
            }
            _ => st.known.entry(id.to_owned()).or_default().apply(&patch),
        }
        Ok(delivery)
    }

    /// Removes a process; one that does not exist counts as removed.
    pub async fn remove(&self, id: &str) -> Result<Delivery, ClientError> {
        let mut st = self.state.lock().await;
        st.known.remove(id);
        st.ends.remove(id);
        self.deliver(&mut st, QueuedOp::Remove { id: id.to_owned() }).await
    }

    /// Appends output to a process (`stream`: the pipe it came from, if
    /// any), or queues it while offline. Sent with `?at=N` when this client
    /// knows where the output ends (see the module doc), so neither a lost
    /// answer nor a repeated flush doubles it. A [`ClientError::OffsetMismatch`]
    /// means something else wrote to the process too; the next append is
    /// then sent without an offset.
    pub async fn append(&self, id: &str, content: &str, stream: Option<StreamKind>) -> Result<Delivery, ClientError> {
        let mut st = self.state.lock().await;
        let at = st.ends.get(id).copied();
        let op = QueuedOp::Append {
            id: id.to_owned(),
            content: content.to_owned(),
            stream,
            at,
        };
        let delivery = self.deliver(&mut st, op).await;
        match &delivery {
            Ok(Delivery::Appended { output_bytes }) => {
                st.ends.insert(id.to_owned(), *output_bytes);
            }
            Ok(_) => {
                if let Some(at) = at {
                    st.ends.insert(id.to_owned(), at + content.len() as u64);
                }
            }
            Err(_) => {
                st.ends.remove(id);
            }
        }
        delivery
    }

    /// Sends `op` now, or queues it if offline (or it turns out so).
    async fn deliver(&self, st: &mut State, op: QueuedOp) -> Result<Delivery, ClientError> {
        if !st.offline {
            match self.send(st, &op).await {
                Err(e) if e.is_offline() => {
                    tracing::info!(err = %e, "server unreachable; queueing requests until flush");
                    st.offline = true;
                }
                other => return other,
            }
        }
        self.enqueue(op).await?;
        Ok(Delivery::Queued)
    }

    /// Runs `f` on the queue on the blocking pool (it locks, reads and
    /// rewrites the file).
    async fn with_queue<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut OfflineQueue) -> Result<T, ClientError> + Send + 'static,
    ) -> Result<T, ClientError> {
        let queue = self.queue.clone();
        tokio::task::spawn_blocking(move || f(&mut crate::sync::lock(&queue)))
            .await
            .map_err(|e| ClientError::Invalid(format!("queue task failed: {e}")))?
    }

    async fn enqueue(&self, op: QueuedOp) -> Result<u64, ClientError> {
        self.with_queue(move |q| q.push(op)).await
    }

    /// One request, with the workspace registered first if needed.
    async fn send(&self, st: &mut State, op: &QueuedOp) -> Result<Delivery, ClientError> {
        if !st.registered {
            self.client.create_workspace(&self.identity.registration()).await?;
            st.registered = true;
        }
        match op {
            QueuedOp::Create { process } => match self.client.create_process(process).await {
                Ok(p) => Ok(Delivery::Sent(Box::new(p))),
                Err(ClientError::Api {
                    status: 409,
                    existing: Some(p),
                    ..
                }) if p.workspace == self.identity.id => Ok(Delivery::Sent(p)),
                Err(e) => Err(e),
            },
            QueuedOp::Update { id, patch } => {
                let p = self.client.update_process(id, patch).await?;
                Ok(Delivery::Sent(Box::new(p)))
            }
            QueuedOp::Remove { id } => match self.client.delete_process(id).await {
                Ok(()) => Ok(Delivery::Removed),
                Err(e) if e.is_not_found() => Ok(Delivery::Removed),
                Err(e) => Err(e),
            },
            QueuedOp::Append {
                id,
                content,
                stream,
                at,
            } => {
                let output_bytes = self.client.append_output_at(id, content, *stream, *at).await?;
                Ok(Delivery::Appended { output_bytes })
            }
        }
    }

    /// A queued append answered "the output ends at `output_bytes`, not at
    /// your `at`": was it stored by an earlier, interrupted flush? Yes if
    /// the bytes stored at `at` are its content (the exact-end case is
    /// settled by [`Client::append_output_at`] already).
    ///
    /// The limit of this check: the queue assumes it is the only writer of
    /// its processes' output (they are the ones this client submitted). If
    /// another writer stored the very same bytes at `at` (a lone `"\n"`),
    /// the queued append is taken as delivered and dropped; if `at` falls
    /// in an elided range the stored bytes are the marker, never equal, and
    /// the append is reported as a mismatch rather than guessed.
    async fn stored_before(&self, op: &QueuedOp, output_bytes: u64) -> Result<bool, ClientError> {
        let QueuedOp::Append {
            id,
            content,
            at: Some(at),
            ..
        } = op
        else {
            return Ok(false);
        };
        if at.saturating_add(content.len() as u64) > output_bytes {
            return Ok(false);
        }
        let stored = self.client.read_output_prefix(id, *at, content.len()).await?;
        Ok(stored == content.as_bytes())
    }

    /// Sends the queued requests in order, each exactly once; the client
    /// is online again when the queue is empty.
    pub async fn flush(&self) -> Result<FlushReport, ClientError> {
        let mut st = self.state.lock().await;
        let mut report = FlushReport::default();
        // A new server may not know the workspace yet.
        st.registered = false;
        loop {
            // Re-read: another window on this workspace may have changed it.
            let front = self.with_queue(|q| q.reload().map(|()| q.front().cloned())).await?;
            let Some(entry) = front else {
                break;
            };
            let sent = match self.send(&mut st, &entry.op).await {
                Err(ClientError::OffsetMismatch { output_bytes, message }) => {
                    match self.stored_before(&entry.op, output_bytes).await {
                        Ok(true) => Ok(Delivery::Appended { output_bytes }),
                        Ok(false) => Err(ClientError::OffsetMismatch { output_bytes, message }),
                        Err(e) => Err(e),
                    }
                }
                other => other,
            };
            match sent {
                Ok(delivery) => {
                    match &delivery {
                        Delivery::Sent(p) => {
                            st.known.insert(p.id.to_string(), Known::from_record(p));
                        }
                        Delivery::Appended { output_bytes } => {
                            st.ends.insert(entry.op.process_id().to_owned(), *output_bytes);
                        }
                        _ => {}
                    }
                    report.sent += 1;
                }
                // Gone again, or unwell (5xx, 429): try later.
                Err(e) if e.is_retryable() || e.status() == Some(429) => {
                    st.offline = true;
                    report.remaining = self.lock_queue().len();
                    return Ok(report);
                }
                // Not the entry's fault but the client's configuration:
                // keep everything queued and say so.
                Err(e @ ClientError::Unauthorized { .. }) => {
                    st.offline = true;
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(err = %e, op = ?entry.op, "the server refused a queued request; dropping it");
                    report.rejected.push((entry.op.clone(), e));
                }
            }
            self.with_queue(move |q| q.remove(entry.seq)).await?;
        }
        st.offline = false;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    #[test]
    fn updates_keep_only_changes() {
        let mut k = Known(NewProcess {
            name: "build".into(),
            status: Some(Status::Running),
            metadata: serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap(),
            ..Default::default()
        });
        let desired = ProcessPatch {
            name: Some("build".into()),
            status: Some(Status::Completed),
            result: Some(Value::Null),
            error: Some(None),
            metadata: Some(serde_json::json!({"a": 1, "b": 3, "c": null})),
            exit_code: None,
            exit_signal: None,
        };
        let diff = k.diff(desired);
        assert_eq!(
            diff,
            ProcessPatch {
                status: Some(Status::Completed),
                metadata: Some(serde_json::json!({"b": 3})),
                ..Default::default()
            }
        );
        k.apply(&diff);
        let again = k.diff(ProcessPatch {
            status: Some(Status::Completed),
            metadata: Some(serde_json::json!({"b": 3})),
            ..Default::default()
        });
        assert!(is_empty_patch(&again));
    }
}
