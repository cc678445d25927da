//! `GET /healthz`: liveness plus a few gauges; never needs auth.

use http::StatusCode;
use serde_json::json;

use crate::server::App;
use crate::server::response::{self, Resp};

pub fn get(app: &App) -> Resp {
    response::json(
        StatusCode::OK,
        &json!({
            "status": "ok",
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_s": app.started.elapsed().as_secs(),
            "processes": app.store.process_count(),
            "emitters": app.store.emitter_count(),
        }),
    )
}
