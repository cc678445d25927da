//! A process's stored output through the client: appends that can be
//! retried without doubling (`?at=N`, SPEC section 2) and reads of the
//! history with its filters (`GET …/output`, SPEC section 10).
//!
//! # Retrying an append
//! An append sent with `at` (the offset where the caller believes the
//! output ends) is stored only if the output really ends there. So when
//! the answer is lost (the connection broke after the request went out,
//! or it timed out), sending it again is safe: either the first attempt
//! was not stored and this one is, or it was, and the server answers 409
//! `offset_mismatch` with `output_bytes == at + content.len()`, which
//! [`Client::append_output_at`] reports as the success it was. Any other
//! mismatch is [`ClientError::OffsetMismatch`]: someone else wrote, or
//! the caller's offset was wrong.

use std::ops::Range;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method};
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};

use super::api::process_path;
use super::error::{ClientError, api_error, error_chain};
use super::transport::{Client, REQUEST_TIMEOUT};
use super::url::query;
use crate::model::{OutputQuery, OutputRange, StreamKind, format_ts};

/// Header of every `GET …/output` answer: the offset where the stored
/// output ended when the read began (a follower continues from there).
pub const OUTPUT_END_HEADER: &str = "prochub-output-end";
/// Header of a `GET …/output` answer whose range includes elided bytes:
/// `A-B`, the absolute range no longer stored.
pub const ELIDED_HEADER: &str = "prochub-elided";
/// Times an append with `at` is sent again after its answer was lost
/// (the connection broke, or it timed out). Without `at` it never is: a
/// retry could store the content twice.
pub const APPEND_RETRIES: usize = 2;

/// What a read of stored output returned: the body, and what the headers
/// said about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputRead<B> {
    pub body: B,
    /// `Prochub-Output-End`: where the stored output ended when the read
    /// began; follow from here (`Client::follow(id, Some(end))`) to get
    /// what comes next with no gap and no duplicate. None from a server
    /// that predates the header.
    pub end: Option<u64>,
    /// `Prochub-Elided: A-B`: the served range crossed bytes that are no
    /// longer stored (the body has a marker line where they were).
    pub elided: Option<Range<u64>>,
}

/// A read of stored output as text.
pub type OutputText = OutputRead<String>;

/// `?offset|tail|since|until|lines|timestamps|stream` for a query (`""`
/// when it asks for everything). Times go as RFC 3339 UTC with
/// milliseconds, resolved by the caller against its own clock.
pub(crate) fn output_query(q: &OutputQuery) -> String {
    let (offset, tail) = match q.range {
        OutputRange::All => (None, None),
        OutputRange::From(n) => (Some(n), None),
        OutputRange::Tail(n) => (None, Some(n)),
    };
    query(&[
        ("offset", offset.map(|n| n.to_string())),
        ("tail", tail.map(|n| n.to_string())),
        ("since", q.since.as_ref().map(format_ts)),
        ("until", q.until.as_ref().map(format_ts)),
        ("lines", q.lines.map(|n| n.to_string())),
        ("timestamps", q.timestamps.then(|| "true".to_owned())),
        ("stream", q.stream.map(|s| pipe_name(s).to_owned())),
    ])
}

/// How a pipe is named in queries and bodies (its serde name).
pub fn pipe_name(s: StreamKind) -> &'static str {
    match s {
        StreamKind::Stdout => "stdout",
        StreamKind::Stderr => "stderr",
    }
}

/// `Prochub-Output-End` and `Prochub-Elided` of an answer; a header that
/// does not parse counts as absent.
pub(crate) fn output_headers(headers: &HeaderMap) -> (Option<u64>, Option<Range<u64>>) {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let end = text(OUTPUT_END_HEADER).and_then(|v| v.parse().ok());
    let elided = text(ELIDED_HEADER).and_then(parse_range);
    (end, elided)
}

/// `A-B` with `A <= B`.
fn parse_range(v: &str) -> Option<Range<u64>> {
    let (a, b) = v.split_once('-')?;
    let (a, b): (u64, u64) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
    (a <= b).then_some(a..b)
}

/// The retry rule: a 409 `offset_mismatch` to an append of `len` bytes at
/// `at` that reports the output ending exactly after it means an earlier
/// attempt of this same append was stored.
pub fn stored_by_earlier_attempt(at: u64, len: usize, output_bytes: u64) -> bool {
    at.checked_add(len as u64) == Some(output_bytes)
}

/// Whether a failed request may have reached the server with its answer
/// lost on the way back (as opposed to never leaving: unreachable).
fn answer_lost(e: &ClientError) -> bool {
    matches!(e, ClientError::Transport { .. } | ClientError::Timeout { .. })
}

impl Client {
    /// `POST /api/processes/:id/output`; returns where the output ends
    /// now. Sent once: see [`Client::append_output_at`] for retries.
    pub async fn append_output(&self, id: &str, content: &str) -> Result<u64, ClientError> {
        self.append_output_at(id, content, None, None).await
    }

    /// `POST /api/processes/:id/output[?at=N]` with `{"content", "stream"?}`;
    /// returns where the output ends after it (`output_bytes`).
    ///
    /// With `at = Some(n)` the content is stored only if the output ends at
    /// `n`, so the call is idempotent: a lost answer is retried (up to
    /// [`APPEND_RETRIES`] times), and a 409 saying the output ends at
    /// `n + content.len()` is taken as this append's success (see the
    /// module doc). Pass the previous call's result as the next `at`. Any
    /// other end is [`ClientError::OffsetMismatch`] carrying it.
    pub async fn append_output_at(
        &self,
        id: &str,
        content: &str,
        stream: Option<StreamKind>,
        at: Option<u64>,
    ) -> Result<u64, ClientError> {
        #[derive(Serialize)]
        struct Body<'a> {
            content: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            stream: Option<StreamKind>,
        }
        #[derive(Deserialize)]
        struct Answer {
            output_bytes: u64,
        }
        let q = query(&[("at", at.map(|n| n.to_string()))]);
        let path = format!("{}/output{q}", process_path(id)?);
        let body = Body { content, stream };
        let mut retries = 0;
        loop {
            match self.json::<Answer>(Method::POST, &path, Some(&body)).await {
                Ok(a) => return Ok(a.output_bytes),
                Err(ClientError::OffsetMismatch { output_bytes, .. })
                    if at.is_some_and(|at| stored_by_earlier_attempt(at, content.len(), output_bytes)) =>
                {
                    return Ok(output_bytes);
                }
                Err(e) if at.is_some() && answer_lost(&e) && retries < APPEND_RETRIES => {
                    retries += 1;
                    tracing::debug!(err = %e, id, retries, "append answer lost; sending it again with its offset");
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// `GET /api/processes/:id/output` with the query's filters, as text.
    /// The server sends UTF-8; a torn edge (a byte range cut inside a
    /// character by an older server) becomes U+FFFD here.
    pub async fn read_output(&self, id: &str, q: &OutputQuery) -> Result<OutputText, ClientError> {
        let r = self.read_output_bytes(id, q).await?;
        Ok(OutputRead {
            body: String::from_utf8_lossy(&r.body).into_owned(),
            end: r.end,
            elided: r.elided,
        })
    }

    /// `GET /api/processes/:id/output`, the bytes as served.
    pub async fn read_output_bytes(&self, id: &str, q: &OutputQuery) -> Result<OutputRead<Bytes>, ClientError> {
        let path = format!("{}/output{}", process_path(id)?, output_query(q));
        let (_, headers, body) = self.call(Method::GET, &path, None).await?;
        let (end, elided) = output_headers(&headers);
        Ok(OutputRead { body, end, elided })
    }

    /// At most `len` bytes of stored output from offset `from`: the read
    /// stops (and the connection is dropped) once it has them, so checking
    /// a small piece of a large log costs a small read.
    pub(crate) async fn read_output_prefix(&self, id: &str, from: u64, len: usize) -> Result<Bytes, ClientError> {
        let q = OutputQuery::range(OutputRange::From(from));
        let path = format!("{}/output{}", process_path(id)?, output_query(&q));
        let broken = |e: &(dyn std::error::Error + 'static)| ClientError::Transport {
            url: self.base_url().to_owned(),
            message: error_chain(e),
        };
        let read = async {
            let resp = self.send_raw(Method::GET, &path, None, &[]).await?;
            let (parts, mut body) = resp.into_parts();
            if !parts.status.is_success() {
                let bytes = body.collect().await.map_err(|e| broken(&e))?.to_bytes();
                return Err(api_error(parts.status, &bytes));
            }
            let mut got = BytesMut::new();
            while got.len() < len {
                let Some(frame) = body.frame().await else { break };
                if let Ok(data) = frame.map_err(|e| broken(&e))?.into_data() {
                    got.extend_from_slice(&data);
                }
            }
            got.truncate(len);
            Ok(got.freeze())
        };
        tokio::time::timeout(REQUEST_TIMEOUT, read)
            .await
            .map_err(|_| ClientError::Timeout {
                url: self.base_url().to_owned(),
                secs: REQUEST_TIMEOUT.as_secs(),
            })?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Timestamp;

    fn at(s: &str) -> Timestamp {
        s.parse().expect("a valid time")
    }

    #[test]
    fn queries_carry_every_filter() {
        assert_eq!(output_query(&OutputQuery::default()), "");
        assert_eq!(output_query(&OutputQuery::range(OutputRange::From(7))), "?offset=7");
        assert_eq!(output_query(&OutputQuery::range(OutputRange::Tail(9))), "?tail=9");
        let q = OutputQuery {
            range: OutputRange::Tail(4096),
            since: Some(at("2026-12-01T10:00:00.123456Z")),
            until: Some(at("2026-12-01T12:30:00+02:00")),
            lines: Some(100),
            timestamps: true,
            stream: Some(StreamKind::Stderr),
        };
        assert_eq!(
            output_query(&q),
            "?tail=4096&since=2026-12-01T10%3A00%3A00.123Z&until=2026-12-01T10%3A30%3A00.000Z\
             &lines=100&timestamps=true&stream=stderr"
        );
        let q = OutputQuery {
            stream: Some(StreamKind::Stdout),
            ..OutputQuery::default()
        };
        assert_eq!(
            output_query(&q),
            "?stream=stdout",
            "timestamps=false is the default, not sent"
        );
    }

    #[test]
    fn output_headers_parse_or_count_as_absent() {
        let mut h = HeaderMap::new();
        assert_eq!(output_headers(&h), (None, None));
        h.insert("Prochub-Output-End", "4194304".parse().unwrap());
        h.insert("Prochub-Elided", "2097152-100663296".parse().unwrap());
        assert_eq!(output_headers(&h), (Some(4194304), Some(2097152..100663296)));
        h.insert("Prochub-Output-End", "soon".parse().unwrap());
        h.insert("Prochub-Elided", "9-3".parse().unwrap());
        assert_eq!(output_headers(&h), (None, None));
        assert_eq!(parse_range("5"), None);
    }

    #[test]
    fn only_the_exact_end_after_an_append_means_it_was_stored() {
        assert!(stored_by_earlier_attempt(10, 5, 15));
        assert!(
            !stored_by_earlier_attempt(10, 5, 10),
            "not stored yet: the retry itself would be"
        );
        assert!(!stored_by_earlier_attempt(10, 5, 16), "someone else wrote too");
        assert!(!stored_by_earlier_attempt(10, 5, 3));
        assert!(!stored_by_earlier_attempt(u64::MAX, 1, 0), "no overflow");
    }

    #[test]
    fn only_a_lost_answer_is_retried() {
        let url = "http://127.0.0.1:1".to_owned();
        assert!(answer_lost(&ClientError::Transport {
            url: url.clone(),
            message: "connection closed before message completed".into()
        }));
        assert!(answer_lost(&ClientError::Timeout {
            url: url.clone(),
            secs: 30
        }));
        assert!(!answer_lost(&ClientError::Unreachable {
            url,
            cause: "refused".into()
        }));
        assert!(!answer_lost(&ClientError::OffsetMismatch {
            output_bytes: 3,
            message: String::new()
        }));
    }
}
