//! `GET /healthz`: liveness plus a few gauges; never needs auth. With a
//! token configured it says only `status` and `version`: the gauges
//! (record and follower counts) are the token holders' business.

use http::StatusCode;
use serde_json::json;

use crate::server::App;
use crate::server::response::{self, Resp};

pub fn get(app: &App) -> Resp {
    let body = if app.config.token.is_some() {
        json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
        })
    } else {
        json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": app.started.elapsed().as_secs(),
            "processes": app.store.process_count(),
            "emitters": app.store.emitter_count(),
        })
    };
    response::json(StatusCode::OK, &body)
}
