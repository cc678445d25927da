//! `/api/processes/:id/output`: append (JSON `{"content"}` or raw
//! `text/plain`) and read (`?offset=N` or `?tail=N`).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::model::{Id, OutputRange};
use crate::server::App;
use crate::server::body::{self, Kind};
use crate::server::error::ApiError;
use crate::server::response::{self, Resp};
use crate::server::url::Query;
use crate::store::OutputReader;

/// JSON body of an append.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendBody {
    content: String,
}

/// 202 `{output_bytes}`. Raw `text/plain` bodies that are not valid UTF-8
/// are converted lossily (invalid bytes become U+FFFD): output is text.
pub async fn append(app: &Arc<App>, id: &Id, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (parts, incoming) = req.into_parts();
    let kind = body::content_kind(&parts.headers);
    let Some(kind) = kind else {
        body::refuse(&parts.headers, incoming).await;
        return Err(body::unsupported(&parts.headers, "application/json or text/plain"));
    };
    let bytes = body::read(&parts.headers, incoming, app.config.max_body).await?;
    let content = match kind {
        Kind::Json => body::parse_json::<AppendBody>(&bytes)?.content,
        Kind::Text => match String::from_utf8(bytes.into()) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        },
    };
    let r = app.store.append_output(id, content, None).await?;
    Ok(response::json(
        StatusCode::ACCEPTED,
        &json!({ "output_bytes": r.output_bytes }),
    ))
}

/// The stored output as `text/plain; charset=utf-8`. A range that starts
/// inside a character starts at the next whole one instead (so `?offset`
/// and `?tail` are byte positions, and the body may begin up to 3 bytes
/// after the one asked for). The range is what is stored when the request
/// arrives. It is read block by block as the client takes it (regression:
/// the whole range was built in memory, 16 MiB per client that did not
/// read); a range that fits in one block goes out with `Content-Length`,
/// a longer one chunked.
pub async fn read(app: &Arc<App>, id: &Id, q: &Query) -> Result<Resp, ApiError> {
    let range = match (q.u64("offset")?, q.u64("tail")?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                "give `offset` or `tail`, not both",
            ));
        }
        (Some(n), None) => OutputRange::From(n),
        (None, Some(n)) => OutputRange::Tail(n),
        (None, None) => OutputRange::All,
    };
    // The reader aligns the start to a character and replaces invalid
    // bytes (a log torn by a crash), so the body is the UTF-8 it is
    // labelled as.
    let mut reader = app.store.output_reader(id, range)?;
    let first = reader.next_block().await?.unwrap_or_default();
    let body = if reader.is_done() {
        response::full(first)
    } else {
        response::stream(futures_util::stream::once(async { Bytes::from(first) }).chain(blocks(reader)))
    };
    Ok(response::with_type(StatusCode::OK, body, "text/plain; charset=utf-8"))
}

/// The blocks after the first, read as the body is polled. An error ends
/// the body early: with no `Content-Length` and no final chunk the client
/// sees a truncated response, never wrong bytes.
fn blocks(reader: OutputReader) -> impl futures_util::Stream<Item = Bytes> + Send + 'static {
    futures_util::stream::unfold(reader, |mut r| async move {
        match r.next_block().await {
            Ok(Some(text)) => Some((Bytes::from(text), r)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(%e, "output read failed mid-body");
                None
            }
        }
    })
}
