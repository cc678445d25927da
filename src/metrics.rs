//! Process-wide metrics, exposed by the server as `GET /metrics` in the
//! Prometheus text format (SPEC section 12), built on `prometheus-client`.
//!
//! A bottom-layer module: the store, the runner and the server all record
//! here, and it knows nothing about any of them (only the model's enums).
//! The store never depends on the server to count; the server only adds
//! the figures it reads from the store at scrape time.
//!
//! # What is counted where, and what it costs
//! * Counters and gauges are atomics behind pre-resolved handles (fields
//!   of [`Metrics`], or arrays indexed by an enum): recording one is a
//!   relaxed `fetch_add`, no allocation, no lock. That is all the fan-out
//!   path does: one add per append (not per follower), one add per log
//!   block replayed, one per laggard catch-up, one inc/dec per follower
//!   opened/closed.
//! * Per-request figures (`prochub_http_requests_total`, the duration
//!   histogram) resolve their label set in a `Family` (a read lock and a
//!   hash lookup) and a histogram observation takes the histogram's own
//!   short mutex: per request, never per chunk delivered.
//! * Gauges that the store can answer at scrape time (processes by status,
//!   live emitters) are not tracked: [`Metrics::encode`] takes them as a
//!   [`Snapshot`] the server reads from the store when it is scraped.
//!
//! # Why one process-wide set
//! A process serves one store, so one set of metrics per process is what
//! a scraper sees anyway, and a hook deep in the store (a laggard catching
//! up in `Follow`) records with one line instead of a handle threaded
//! through every constructor. Tests that run several servers in one
//! process assert on counter deltas, or scrape a server binary of their own.
//!
//! # Label cardinality
//! Every label value is a `&'static str` or a small integer taken from a
//! closed set: route patterns (`/api/processes/:id`, never the raw path),
//! a fixed list of methods (anything else is `OTHER`), status codes the
//! server produces, connection kinds, event types, process statuses.

use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::model::{EventKind, Status};

/// `Content-Type` of the OpenMetrics text format, which Prometheus asks
/// for in its `Accept` header.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// `Content-Type` of the classic Prometheus text format (0.0.4), served to
/// everyone else (curl, browsers, older scrapers).
pub const PROMETHEUS_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the request-duration buckets, in seconds: 0.5 ms to 10 s
/// (the classic Prometheus client defaults, extended down for loopback).
pub const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The route label of a request that matched no route (404s, bad paths).
pub const UNMATCHED_ROUTE: &str = "unmatched";
/// The route label of a request hyper rejected before it was routed (a bad
/// request line, headers over the limit).
pub const MALFORMED_ROUTE: &str = "malformed";

/// A kind of open connection, for `prochub_open_connections{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnKind {
    /// An HTTP/1 connection (it may be carrying an SSE stream right now; a
    /// WebSocket leaves it when it is upgraded).
    Http = 0,
    /// An SSE response being streamed (follow or lifecycle events).
    Sse = 1,
    /// An upgraded WebSocket.
    Ws = 2,
}

impl ConnKind {
    const ALL: [ConnKind; 3] = [ConnKind::Http, ConnKind::Sse, ConnKind::Ws];

    fn as_str(self) -> &'static str {
        match self {
            ConnKind::Http => "http",
            ConnKind::Sse => "sse",
            ConnKind::Ws => "ws",
        }
    }
}

const EVENT_KINDS: [EventKind; 5] = [
    EventKind::ProcessAdded,
    EventKind::ProcessUpdated,
    EventKind::ProcessRemoved,
    EventKind::WorkspaceAdded,
    EventKind::WorkspaceRemoved,
];

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabels {
    route: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TypeLabels {
    r#type: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct StatusLabels {
    status: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

/// Every metric the process records. Fields are handles into `registry`
/// (each handle is an `Arc` around atomics, shared with the registry).
pub struct Metrics {
    registry: Registry,
    http_requests: Family<RequestLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    /// Indexed by `ConnKind as usize`.
    connections: [Gauge; 3],
    followers: Gauge,
    output_appends: Counter,
    output_bytes: Counter,
    fsync: Histogram,
    catchups: Counter,
    replay_bytes: Counter,
    /// Indexed like `EVENT_KINDS`.
    lifecycle: [Counter; 5],
}

/// The figures read from the store when `/metrics` is scraped.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Process records by status.
    pub processes: Vec<(Status, usize)>,
    /// Processes with a live emitter (a running process with followers).
    pub emitters: usize,
}

/// The process's metrics.
pub fn get() -> &'static Metrics {
    static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);
    &METRICS
}

/// Records the time a durable record write spent in fsync (the file and
/// its folder). A plain `fn` so `crate::durable` can take it as a hook
/// without knowing this module.
pub fn observe_fsync(spent: Duration) {
    get().fsync.observe(spent.as_secs_f64());
}

/// Decrements its gauge when dropped: held by whatever is open.
#[must_use = "the gauge goes back down when this is dropped"]
pub struct OpenGuard(Gauge);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// A method label from a closed set (a method is any token, and a label
/// must not take values a client chooses).
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "HEAD" => "HEAD",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        let http_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "prochub_http_requests",
            "HTTP requests answered, by route pattern, method and status",
            http_requests.clone(),
        );
        let http_duration = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            request_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "prochub_http_request_duration",
            "Time from a request's head to its response's head, by route pattern (for SSE and WebSocket: until the stream opens)",
            Unit::Seconds,
            http_duration.clone(),
        );
        let conn_family = Family::<KindLabels, Gauge>::default();
        registry.register(
            "prochub_open_connections",
            "Open connections by kind: http (HTTP/1 connections), sse (SSE responses being streamed), ws (upgraded WebSockets)",
            conn_family.clone(),
        );
        let connections = ConnKind::ALL.map(|k| conn_family.get_or_create_owned(&KindLabels { kind: k.as_str() }));
        let followers = Gauge::default();
        registry.register(
            "prochub_followers",
            "Open output followers (replaying, live or catching up)",
            followers.clone(),
        );
        let output_appends = Counter::default();
        registry.register(
            "prochub_output_appends",
            "Output appends accepted (stored or, past the cap, only streamed)",
            output_appends.clone(),
        );
        let output_bytes = Counter::default();
        registry.register_with_unit(
            "prochub_output",
            "Output bytes appended (stored or, past the cap, only streamed)",
            Unit::Bytes,
            output_bytes.clone(),
        );
        let fsync = Histogram::new(exponential_buckets(0.0001, 2.0, 15));
        registry.register_with_unit(
            "prochub_record_fsync_duration",
            "Time a durable record write spent in fsync (the temp file, then its folder)",
            Unit::Seconds,
            fsync.clone(),
        );
        let catchups = Counter::default();
        registry.register(
            "prochub_laggard_catchups",
            "Times a follower fell behind its emitter and caught up from the output log",
            catchups.clone(),
        );
        let replay_bytes = Counter::default();
        registry.register_with_unit(
            "prochub_replayed",
            "Output bytes read back from the logs for followers (replays and catch-ups)",
            Unit::Bytes,
            replay_bytes.clone(),
        );
        let event_family = Family::<TypeLabels, Counter>::default();
        registry.register(
            "prochub_lifecycle_events",
            "Lifecycle events published to /ws and /api/events, by type",
            event_family.clone(),
        );
        let lifecycle = EVENT_KINDS.map(|k| event_family.get_or_create_owned(&TypeLabels { r#type: k.as_str() }));
        let build = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "prochub_build_info",
            "Always 1; the labels name the build",
            build.clone(),
        );
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        Metrics {
            registry,
            http_requests,
            http_duration,
            connections,
            followers,
            output_appends,
            output_bytes,
            fsync,
            catchups,
            replay_bytes,
            lifecycle,
        }
    }

    /// One answered request. `route` is the route's pattern (or
    /// [`UNMATCHED_ROUTE`] / [`MALFORMED_ROUTE`]), `took` the time until
    /// the response head was ready.
    pub fn request(&self, route: &'static str, method: &str, status: u16, took: Duration) {
        let method = method_label(method);
        self.http_requests
            .get_or_create(&RequestLabels { route, method, status })
            .inc();
        self.http_duration
            .get_or_create(&RouteLabels { route })
            .observe(took.as_secs_f64());
    }

    /// Counts an open connection of `kind` until the guard is dropped.
    pub fn open(&self, kind: ConnKind) -> OpenGuard {
        let gauge = self.connections[kind as usize].clone();
        gauge.inc();
        OpenGuard(gauge)
    }

    pub fn follower_opened(&self) {
        self.followers.inc();
    }

    pub fn follower_closed(&self) {
        self.followers.dec();
    }

    /// One append of `bytes` bytes.
    pub fn output_appended(&self, bytes: usize) {
        self.output_appends.inc();
        self.output_bytes.inc_by(bytes as u64);
    }

    /// A follower fell behind its emitter and catches up from the log.
    pub fn laggard_caught_up(&self) {
        self.catchups.inc();
    }

    /// `bytes` bytes were read back from an output log for a follower.
    pub fn replayed(&self, bytes: usize) {
        self.replay_bytes.inc_by(bytes as u64);
    }

    /// A lifecycle event was published.
    pub fn lifecycle_event(&self, kind: EventKind) {
        let i = EVENT_KINDS
            .iter()
            .position(|k| *k == kind)
            .expect("EVENT_KINDS lists every kind");
        self.lifecycle[i].inc();
    }

    /// The text of a scrape: every recorded metric plus the scrape-time
    /// gauges of `snapshot`, as OpenMetrics text or (when `openmetrics` is
    /// false) the Prometheus 0.0.4 text format.
    pub fn encode(&self, snapshot: &Snapshot, openmetrics: bool) -> String {
        let scrape = scrape_registry(snapshot);
        let mut out = String::with_capacity(16 * 1024);
        let written = if openmetrics {
            use prometheus_client::encoding::text;
            text::encode_registry(&mut out, &self.registry)
                .and_then(|_| text::encode_registry(&mut out, &scrape))
                .and_then(|_| text::encode_eof(&mut out))
        } else {
            use prometheus_client::encoding::prometheus_text;
            prometheus_text::encode(&mut out, &self.registry).and_then(|_| prometheus_text::encode(&mut out, &scrape))
        };
        written.expect("writing to a String cannot fail");
        out
    }
}

/// A registry of the scrape-time gauges, built for one scrape (a handful
/// of gauges), so two stores scraped at once never see each other's.
fn scrape_registry(snapshot: &Snapshot) -> Registry {
    let mut registry = Registry::default();
    let processes = Family::<StatusLabels, Gauge>::default();
    for status in Status::ALL {
        let n = snapshot
            .processes
            .iter()
            .find(|(s, _)| *s == status)
            .map_or(0, |(_, n)| *n);
        processes
            .get_or_create(&StatusLabels {
                status: status.as_str(),
            })
            .set(n as i64);
    }
    registry.register("prochub_processes", "Process records by status", processes);
    let emitters: Gauge<u64, AtomicU64> = Gauge::default();
    emitters.set(snapshot.emitters as u64);
    registry.register(
        "prochub_emitters",
        "Live emitters: running processes with at least one follower",
        emitters,
    );
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_carry_every_family() {
        let m = Metrics::new();
        m.request("/api/processes/:id", "BREW", 404, Duration::from_millis(2));
        m.output_appended(10);
        m.lifecycle_event(EventKind::ProcessRemoved);
        let _ws = m.open(ConnKind::Ws);
        let snap = Snapshot {
            processes: vec![(Status::Running, 3)],
            emitters: 2,
        };
        for openmetrics in [true, false] {
            let text = m.encode(&snap, openmetrics);
            for needle in [
                r#"prochub_http_requests_total{route="/api/processes/:id",method="OTHER",status="404"} 1"#,
                r#"prochub_open_connections{kind="ws"} 1"#,
                r#"prochub_open_connections{kind="sse"} 0"#,
                "prochub_output_bytes_total 10",
                r#"prochub_lifecycle_events_total{type="process-removed"} 1"#,
                r#"prochub_processes{status="running"} 3"#,
                r#"prochub_processes{status="failed"} 0"#,
                "prochub_emitters 2",
                "prochub_record_fsync_duration_seconds_count 0",
                &format!(r#"prochub_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION")),
            ] {
                assert!(
                    text.contains(needle),
                    "missing {needle:?} (openmetrics: {openmetrics}) in\n{text}"
                );
            }
            // The formats order a histogram's labels differently.
            assert!(
                text.lines()
                    .any(|l| l.starts_with("prochub_http_request_duration_seconds_bucket{")
                        && l.contains(r#"le="0.0025""#)
                        && l.contains(r#"route="/api/processes/:id""#)
                        && l.ends_with("} 1")),
                "{text}"
            );
            assert_eq!(text.ends_with("# EOF\n"), openmetrics);
        }
    }
}
