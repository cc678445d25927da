//! Output history through the client library (issue 10): appends with
//! `?at=N` and their retry rule, history reads with filters and their
//! headers, chunk times and pipes. Tests marked `needs issue-10 server`
//! exercise server work done in parallel (H1/H2) and run once merged.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use prochub::client::{Client, ClientError, OutputEvent};
use prochub::model::{NewProcess, OutputQuery, OutputRange, Process, ProcessPatch, Status, StreamKind, Timestamp};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

use crate::helper::client::{ServerProc, WAIT};
use crate::helper::wait_until;

async fn pushed(c: &Client, name: &str) -> Process {
    c.create_process(&NewProcess {
        name: name.into(),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Every chunk a follower from byte 0 sees, with its pipe and time, up
/// to `Done` (the process must be finished).
async fn chunks(c: &Client, id: &str) -> Vec<(String, Option<StreamKind>, Option<Timestamp>)> {
    let mut f = c.follow(id, Some(0));
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(ev) = f.next().await {
            match ev.expect("no stream error") {
                OutputEvent::Chunk {
                    content, stream, ts, ..
                } => out.push((content, stream, ts)),
                OutputEvent::Done => return,
                _ => {}
            }
        }
    })
    .await
    .expect("the replay ends in time");
    out
}

/// A proxy in front of a server that forwards every request, but for
/// the `cut_at`-th (counting from 1) lets the server answer and then
/// closes the client's connection without passing the answer on: the
/// append was stored, its producer hears only a broken connection.
struct AnswerCutter {
    addr: SocketAddr,
    received: Arc<AtomicUsize>,
    accept: AbortHandle,
}

impl AnswerCutter {
    async fn start(target: SocketAddr, cut_at: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(AtomicUsize::new(0));
        let count = received.clone();
        let http: HttpClient =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (count, http) = (count.clone(), http.clone());
                let service = hyper::service::service_fn(move |req| {
                    let n = count.fetch_add(1, Ordering::SeqCst) + 1;
                    relay(http.clone(), target, req, n == cut_at)
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        })
        .abort_handle();
        AnswerCutter { addr, received, accept }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn received(&self) -> usize {
        self.received.load(Ordering::SeqCst)
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

/// Forwards one request; with `cut`, swallows the answer and fails, which
/// makes hyper close the client's connection.
async fn relay(
    http: HttpClient,
    target: SocketAddr,
    req: http::Request<hyper::body::Incoming>,
    cut: bool,
) -> Result<http::Response<hyper::body::Incoming>, BoxError> {
    use http_body_util::BodyExt;
    let (mut parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    parts.uri = format!("http://{target}{path}").parse()?;
    let resp = http
        .request(http::Request::from_parts(parts, http_body_util::Full::new(body)))
        .await?;
    if cut {
        let _ = resp.into_body().collect().await;
        return Err("answer cut".into());
    }
    Ok(resp)
}

impl Drop for AnswerCutter {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Without an offset a lost answer cannot be told from a lost request,
/// so the append is sent once and the broken connection reported: a
/// blind retry could store it twice.
#[tokio::test]
async fn an_append_without_an_offset_is_never_sent_twice() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path()).await;
    let direct = Client::new(&server.url, None).unwrap();
    let p = pushed(&direct, "no offset").await;
    let cutter = AnswerCutter::start(server.addr, 1).await;
    let c = Client::new(&cutter.url(), None).unwrap();
    let err = c.append_output(&p.id, "once\n").await.unwrap_err();
    assert!(matches!(err, ClientError::Transport { .. }), "{err:?}");
    assert_eq!(cutter.received(), 1, "not resent");
    let stored = direct.read_output(&p.id, &OutputQuery::default()).await.unwrap();
    assert_eq!(stored.body, "once\n", "stored by the one attempt");
    server.stop().await;
}

#[tokio::test]
async fn an_append_at_the_end_is_stored_once_and_elsewhere_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path()).await;
    let c = Client::new(&server.url, None).unwrap();
    let p = pushed(&c, "at").await;
    assert_eq!(c.append_output_at(&p.id, "one\n", None, Some(0)).await.unwrap(), 4);
    // The same append again (a retry after a lost answer): the server
    // refuses it, and the answer says it was stored: success, not doubled.
    assert_eq!(c.append_output_at(&p.id, "one\n", None, Some(0)).await.unwrap(), 4);
    // A stale offset for other content is an error carrying the end.
    let err = c.append_output_at(&p.id, "other\n", None, Some(0)).await.unwrap_err();
    assert!(
        matches!(err, ClientError::OffsetMismatch { output_bytes: 4, .. }),
        "{err:?}"
    );
    assert_eq!(err.status(), Some(409));
    let err = c.append_output_at(&p.id, "ahead\n", None, Some(99)).await.unwrap_err();
    assert!(
        matches!(err, ClientError::OffsetMismatch { output_bytes: 4, .. }),
        "{err:?}"
    );
    // With a pipe, at the end.
    assert_eq!(
        c.append_output_at(&p.id, "two\n", Some(StreamKind::Stderr), Some(4))
            .await
            .unwrap(),
        8
    );
    assert_eq!(
        c.append_output(&p.id, "three\n").await.unwrap(),
        14,
        "no offset: no check"
    );
    c.update_process(&p.id, &ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    let seen = chunks(&c, &p.id).await;
    let pieces: Vec<(&str, Option<StreamKind>)> = seen.iter().map(|(t, s, _)| (t.as_str(), *s)).collect();
    assert_eq!(
        pieces,
        [("one\n", None), ("two\n", Some(StreamKind::Stderr)), ("three\n", None)]
    );
    assert!(
        seen.iter().all(|(_, _, ts)| ts.is_some()),
        "every chunk has its time: {seen:?}"
    );
    server.stop().await;
}

#[tokio::test]
async fn an_append_whose_answer_is_lost_is_resent_with_its_offset_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path()).await;
    let direct = Client::new(&server.url, None).unwrap();
    let p = pushed(&direct, "lost answer").await;
    direct.append_output(&p.id, "before\n").await.unwrap();
    let cutter = AnswerCutter::start(server.addr, 1).await;
    let c = Client::new(&cutter.url(), None).unwrap();
    // The first attempt is stored but its answer cut; the retry gets 409
    // with the end right after it: success.
    assert_eq!(c.append_output_at(&p.id, "once\n", None, Some(7)).await.unwrap(), 12);
    assert_eq!(cutter.received(), 2, "sent again once");
    let stored = direct.read_output(&p.id, &OutputQuery::default()).await.unwrap();
    assert_eq!(stored.body, "before\nonce\n", "stored exactly once");
    server.stop().await;
}

#[tokio::test]
async fn history_reads_send_every_filter_and_return_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start(dir.path()).await;
    let c = Client::new(&server.url, None).unwrap();
    let p = pushed(&c, "history").await;
    c.append_output_at(&p.id, "old 1\nold 2\n", Some(StreamKind::Stdout), Some(0))
        .await
        .unwrap();
    // A time strictly after the first append's and before the second's
    // (the server stores milliseconds; the client's clock is the same one
    // on loopback).
    let first = prochub::model::now();
    wait_until("the clock moves on", WAIT, async || prochub::model::now() > first).await;
    let mid = prochub::model::now();
    wait_until("the clock moves on", WAIT, async || prochub::model::now() > mid).await;
    let end = c
        .append_output_at(&p.id, "new 1\nnew 2\n", Some(StreamKind::Stderr), Some(12))
        .await
        .unwrap();

    let all = c.read_output(&p.id, &OutputQuery::default()).await.unwrap();
    assert_eq!(all.body, "old 1\nold 2\nnew 1\nnew 2\n");
    assert_eq!((all.end, all.elided), (Some(end), None));

    let q = |f: fn(&mut OutputQuery)| {
        let mut q = OutputQuery::default();
        f(&mut q);
        q
    };
    let since = OutputQuery {
        since: Some(mid),
        ..OutputQuery::default()
    };
    assert_eq!(c.read_output(&p.id, &since).await.unwrap().body, "new 1\nnew 2\n");
    let until = OutputQuery {
        until: Some(mid),
        ..OutputQuery::default()
    };
    assert_eq!(c.read_output(&p.id, &until).await.unwrap().body, "old 1\nold 2\n");
    let last = c.read_output(&p.id, &q(|q| q.lines = Some(3))).await.unwrap();
    assert_eq!(last.body, "old 2\nnew 1\nnew 2\n");
    let err = c
        .read_output(&p.id, &q(|q| q.stream = Some(StreamKind::Stderr)))
        .await
        .unwrap();
    assert_eq!(err.body, "new 1\nnew 2\n");
    let tail = c
        .read_output(&p.id, &q(|q| q.range = OutputRange::Tail(6)))
        .await
        .unwrap();
    assert_eq!(tail.body, "new 2\n");

    let stamped = c
        .read_output(
            &p.id,
            &q(|q| {
                q.timestamps = true;
                q.lines = Some(2);
            }),
        )
        .await
        .unwrap();
    let lines: Vec<&str> = stamped.body.lines().collect();
    assert_eq!(lines.len(), 2, "{stamped:?}");
    for (line, want) in lines.iter().zip(["new 1", "new 2"]) {
        let (ts, text) = line.split_once(' ').expect("a time, a space, the line");
        let ts: Timestamp = ts.parse().expect("an RFC 3339 time");
        assert!(ts > mid, "{line}");
        assert_eq!(text, want);
    }
    server.stop().await;
}

#[tokio::test]
async fn a_read_over_elided_output_says_so_and_a_replay_skips_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProc::start_with(dir.path(), "127.0.0.1:0", &["--max-output", "64KiB"]).await;
    let c = Client::new(&server.url, None).unwrap();
    let p = pushed(&c, "long").await;
    let line = "x".repeat(1023) + "\n";
    let mut at = 0;
    for _ in 0..256 {
        at = c.append_output_at(&p.id, &line, None, Some(at)).await.unwrap();
    }
    c.update_process(&p.id, &ProcessPatch::status(Status::Completed))
        .await
        .unwrap();
    let rec = c.get_process(&p.id).await.unwrap();
    assert_eq!(rec.output_bytes, 256 * 1024);
    assert!(rec.output_truncated && rec.output_elided > 0, "{rec:?}");

    let read = c.read_output(&p.id, &OutputQuery::default()).await.unwrap();
    let gap = read.elided.clone().expect("the read crossed the elided range");
    assert_eq!(gap.end - gap.start, rec.output_elided);
    assert_eq!(read.end, Some(rec.output_bytes));
    let marker = format!("[… {} bytes elided …]\n", rec.output_elided);
    assert_eq!(read.body.matches(&marker).count(), 1, "one marker line");

    let mut f = c.follow(&p.id, Some(0));
    let mut lagged = Vec::new();
    let mut bytes = 0;
    while let Some(ev) = f.next().await {
        match ev.unwrap() {
            OutputEvent::Chunk { content, .. } => bytes += content.len() as u64,
            OutputEvent::Lagged { from, to } => lagged.push(from..to),
            OutputEvent::Done => break,
            OutputEvent::Status(_) => {}
        }
    }
    assert_eq!(lagged, [gap], "skipped once");
    assert_eq!(bytes + rec.output_elided, rec.output_bytes);
    server.stop().await;
}
