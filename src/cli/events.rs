//! `prochub events`: lifecycle events as JSON lines until Ctrl-C.

use super::print::write_chunk;
use super::{EXIT_BROKEN_PIPE, EventsArgs, connect, interrupts};
use crate::client::Event;

pub async fn events(a: EventsArgs) -> anyhow::Result<u8> {
    let client = connect(&a.client)?;
    let mut stream = client.events(a.workspace.as_deref());
    // Connect before waiting: fails fast with the usual message when
    // nothing listens, and events from now on are not missed.
    stream.connect().await?;
    let mut sigint = interrupts()?;
    loop {
        tokio::select! {
            ev = stream.next() => {
                let Some(ev) = ev else { return Ok(0) };
                let line = match ev? {
                    Event::Lifecycle(le) => serde_json::to_string(&le)?,
                    Event::Reset => r#"{"type":"reset"}"#.to_owned(),
                };
                if !write_chunk(&format!("{line}\n"), None)? {
                    return Ok(EXIT_BROKEN_PIPE); // `prochub events | head -1`
                }
            }
            _ = sigint.recv() => return Ok(0),
        }
    }
}
