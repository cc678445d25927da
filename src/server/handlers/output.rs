//! `/api/processes/:id/output`: append (JSON `{"content"}` or raw
//! `text/plain`) and read (`?offset=N` or `?tail=N`).

use std::sync::Arc;

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
/// after the one asked for).
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
    // The store aligns the start to a character and replaces invalid bytes
    // (a log torn by a crash), so the body is the UTF-8 it is labelled as.
    let bytes = app.store.read_output(id, range).await?;
    Ok(response::with_type(
        StatusCode::OK,
        response::full(bytes),
        "text/plain; charset=utf-8",
    ))
}
