//! `/api/processes/:id/output`: append (JSON `{"content", "stream"?}` or
//! raw `text/plain`, `?at=N` for an idempotent retry) and read the stored
//! output (`?offset`/`?tail`, `?since`/`?until`, `?lines`, `?timestamps`,
//! `?stream`: SPEC sections 2 and 10).

use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use http::header::{HeaderName, HeaderValue};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::model::{Id, OutputQuery, OutputRange, StreamKind, Timestamp};
use crate::server::App;
use crate::server::body::{self, Kind};
use crate::server::error::ApiError;
use crate::server::response::{self, Resp};
use crate::server::url::Query;
use crate::store::OutputReader;

/// Where the stored output ended when a read began: a follower continues
/// with `/stream?from=N`.
pub const OUTPUT_END: HeaderName = HeaderName::from_static("prochub-output-end");
/// `A-B`: the bytes of a read's range that are no longer stored (head +
/// tail retention); the body has one marker line at the gap.
pub const ELIDED: HeaderName = HeaderName::from_static("prochub-elided");

/// JSON body of an append.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AppendBody {
    content: String,
    /// The pipe the content came from, for producers that relay a
    /// command's stdout and stderr.
    #[serde(default)]
    stream: Option<StreamKind>,
}

/// 202 `{output_bytes}`. Raw `text/plain` bodies that are not valid UTF-8
/// are converted lossily (invalid bytes become U+FFFD): output is text.
/// With `?at=N` the content is appended only if the output ends at byte N,
/// else 409 `offset_mismatch` with the current `output_bytes` (a producer
/// retrying after a lost 202 neither loses nor doubles output).
pub async fn append(app: &Arc<App>, id: &Id, req: Request<Incoming>, q: &Query) -> Result<Resp, ApiError> {
    let at = q.u64("at")?;
    let (parts, incoming) = req.into_parts();
    let kind = body::content_kind(&parts.headers);
    let Some(kind) = kind else {
        body::refuse(&parts.headers, incoming).await;
        return Err(body::unsupported(&parts.headers, "application/json or text/plain"));
    };
    let bytes = body::read(&parts.headers, incoming, app.config.max_body).await?;
    let (content, stream) = match kind {
        Kind::Json => {
            let b = body::parse_json::<AppendBody>(&bytes)?;
            (b.content, b.stream)
        }
        Kind::Text => match String::from_utf8(bytes.into()) {
            Ok(s) => (s, None),
            Err(e) => (String::from_utf8_lossy(e.as_bytes()).into_owned(), None),
        },
    };
    let r = app.store.append_output_at(id, content, stream, at).await?;
    Ok(response::json(
        StatusCode::ACCEPTED,
        &json!({ "output_bytes": r.output_bytes }),
    ))
}

/// The stored output as `text/plain; charset=utf-8`, as selected by the
/// query (SPEC section 10; the store's `history` module has the rules). A
/// range that starts inside a character starts at the next whole one
/// instead (so `?offset` and `?tail` are byte positions, and the body may
/// begin up to 3 bytes after the one asked for). The output is what is
/// stored when the request arrives; `Prochub-Output-End` says where that
/// ends. It is read block by block as the client takes it (regression: the
/// whole range was built in memory, 16 MiB per client that did not read);
/// a text that fits in one block goes out with `Content-Length`, a longer
/// one chunked.
pub async fn read(app: &Arc<App>, id: &Id, q: &Query) -> Result<Resp, ApiError> {
    let query = output_query(q, (app.store.config().clock)())?;
    let mut reader = app.store.output_reader(id, &query)?;
    let first = reader.next_block().await?.unwrap_or_default();
    let body = if reader.is_done() {
        response::full(first)
    } else {
        let (end, elided) = (reader.output_end(), reader.elided());
        let rest = blocks(reader);
        let body = response::stream(futures_util::stream::once(async { Bytes::from(first) }).chain(rest));
        return Ok(with_headers(body, end, elided));
    };
    Ok(with_headers(body, reader.output_end(), reader.elided()))
}

/// A 200 text response with the read's headers.
fn with_headers(body: response::Body, end: u64, elided: Option<(u64, u64)>) -> Resp {
    let mut resp = response::with_type(StatusCode::OK, body, "text/plain; charset=utf-8");
    let h = resp.headers_mut();
    h.insert(OUTPUT_END, HeaderValue::from(end));
    if let Some((a, b)) = elided {
        h.insert(
            ELIDED,
            HeaderValue::from_str(&format!("{a}-{b}")).expect("digits are header-safe"),
        );
    }
    resp
}

/// Parses a read's parameters; `now` resolves `since`/`until` durations.
fn output_query(q: &Query, now: Timestamp) -> Result<OutputQuery, ApiError> {
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
    let stream = match q.get("stream") {
        None => None,
        Some("stdout") => Some(StreamKind::Stdout),
        Some("stderr") => Some(StreamKind::Stderr),
        Some(v) => {
            return Err(ApiError::bad_request(
                "invalid_query",
                format!("query parameter `stream` must be stdout or stderr, got {v:?}"),
            ));
        }
    };
    Ok(OutputQuery {
        range,
        since: q.get("since").map(|v| time("since", v, now)).transpose()?,
        until: q.get("until").map(|v| time("until", v, now)).transpose()?,
        lines: q.u64("lines")?,
        timestamps: q.bool("timestamps")?,
        stream,
    })
}

/// A `since`/`until` value ([`crate::model::parse_when`]), or 400
/// `invalid_query` naming the parameter.
fn time(key: &str, v: &str, now: Timestamp) -> Result<Timestamp, ApiError> {
    crate::model::parse_when(v, now)
        .map_err(|e| ApiError::bad_request("invalid_query", format!("query parameter `{key}`: {e}")))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<OutputQuery, ApiError> {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z")
            .expect("valid")
            .with_timezone(&chrono::Utc);
        let mut q = Query::parse(Some(s)).expect("decodes");
        // As the router does before the handler runs.
        q.check(crate::server::url::OUTPUT_READ_PARAMS, true)?;
        output_query(&q, now)
    }

    #[test]
    fn every_parameter_parses_and_durations_count_back_from_now() {
        let q = parse("tail=10&since=10m&until=2026-12-01T09:55:00.5%2B00:00&lines=3&timestamps=true&stream=stderr")
            .expect("valid query");
        assert_eq!(q.range, OutputRange::Tail(10));
        assert_eq!(
            q.since.map(|t| crate::model::format_ts(&t)).as_deref(),
            Some("2026-12-01T09:50:00.000Z")
        );
        assert_eq!(
            q.until.map(|t| crate::model::format_ts(&t)).as_deref(),
            Some("2026-12-01T09:55:00.500Z")
        );
        assert_eq!(
            (q.lines, q.timestamps, q.stream),
            (Some(3), true, Some(StreamKind::Stderr))
        );
        assert_eq!(parse("").expect("empty"), OutputQuery::default());
        let far = parse("since=1000000000y").expect("a huge duration is the beginning");
        assert_eq!(far.since, Some(chrono::DateTime::<chrono::Utc>::MIN_UTC));
    }

    #[test]
    fn bad_values_and_unknown_parameters_are_invalid_query() {
        for bad in [
            "stauts=completed",
            "since=yesterday",
            "until=12:00",
            "lines=-1",
            "lines=x",
            "timestamps=yes",
            "stream=both",
            "offset=1&tail=2",
        ] {
            match parse(bad) {
                Err(ApiError::BadRequest { code, message }) => {
                    assert_eq!(code, "invalid_query", "{bad}");
                    let key = bad.split('=').next().expect("a key");
                    assert!(message.contains(key), "{bad}: {message}");
                }
                other => panic!("{bad}: {:?}", other.map(|_| ())),
            }
        }
        assert!(parse("access_token=t&offset=3").is_ok());
    }
}
