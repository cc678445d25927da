//! [`EventStream`]: lifecycle events (SPEC section 4, SSE `/api/events`)
//! across dropped connections; a gap the server cannot replay becomes
//! [`Event::Reset`].

use futures_util::Stream;

use super::error::ClientError;
use super::resumable::Resumable;
use super::transport::Client;
use super::url::query;
use crate::model::LifecycleEvent;

/// What an event stream yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Lifecycle(Box<LifecycleEvent>),
    /// The server could not replay what was missed while disconnected
    /// (restart or too old): re-list to resynchronise.
    Reset,
}

/// Lifecycle events; see [`Client::events`].
pub struct EventStream {
    conn: Resumable,
}

impl EventStream {
    pub(crate) fn new(client: Client, workspace: Option<String>) -> Self {
        let path = format!("/api/events{}", query(&[("workspace", workspace)]));
        EventStream {
            conn: Resumable::new(client, path),
        }
    }

    /// The next event; None only after an error ended the stream.
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            let ev = match self.conn.next().await? {
                Ok(ev) => ev,
                Err(e) => return Some(Err(e)),
            };
            match ev.event.as_str() {
                "reset" => return Some(Ok(Event::Reset)),
                "heartbeat" => {}
                _ => match serde_json::from_str::<LifecycleEvent>(&ev.data) {
                    Ok(le) => return Some(Ok(Event::Lifecycle(Box::new(le)))),
                    Err(e) => tracing::debug!(%e, event = %ev.event, "ignoring an event this client does not know"),
                },
            }
        }
    }

    /// Connects now instead of at the first `next`: events that happen
    /// after this returns are delivered.
    pub async fn connect(&mut self) -> Result<(), ClientError> {
        self.conn.open_now().await
    }

    /// The id a resume would send (`EPOCH-SEQ`).
    pub fn last_event_id(&self) -> Option<&str> {
        self.conn.last_id()
    }

    pub fn into_stream(self) -> impl Stream<Item = Result<Event, ClientError>> + Send {
        futures_util::stream::unfold(self, |mut s| async move { s.next().await.map(|ev| (ev, s)) })
    }
}
