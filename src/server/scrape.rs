//! `GET /metrics`: the process's metrics in the Prometheus text format,
//! plus the figures read from the store at scrape time (processes by
//! status, live emitters). Behind the token when one is set.
//!
//! A scraper that asks for OpenMetrics (`Accept:
//! application/openmetrics-text`, as Prometheus does) gets it; everyone
//! else gets the classic text format 0.0.4.

use http::header::{ACCEPT, CACHE_CONTROL, HeaderValue};
use http::{HeaderMap, StatusCode};

use super::App;
use super::response::{self, Resp};
use crate::metrics::{self, OPENMETRICS_CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE, Snapshot};

pub fn get(app: &App, headers: &HeaderMap) -> Resp {
    let openmetrics = headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let snapshot = Snapshot {
        processes: app.store.count_by_status(),
        emitters: app.store.emitter_count(),
    };
    let text = metrics::get().encode(&snapshot, openmetrics);
    let content_type = if openmetrics {
        OPENMETRICS_CONTENT_TYPE
    } else {
        PROMETHEUS_CONTENT_TYPE
    };
    let mut resp = response::with_type(StatusCode::OK, response::full(text), content_type);
    resp.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
