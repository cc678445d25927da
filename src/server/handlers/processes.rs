//! `/api/processes`: create (maybe running a command), list with filters
//! and cursor pagination, get, merge-patch, delete, cancel; and prune.

use std::sync::Arc;

use http::header::{HeaderValue, LINK, LOCATION};
use http::{Request, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use crate::model::{Id, NewProcess, ProcessPatch, Status, StatusSet};
use crate::server::error::ApiError;
use crate::server::response::{self, Resp};
use crate::server::url::{Params, Query, encode_component};
use crate::server::{App, body};
use crate::store::{ListQuery, MAX_LIMIT, Retention};

/// 201 + `Location`. With `command`, the runner starts it (403 unless the
/// server allows exec); `cwd`/`env` only make sense with a command.
pub async fn create(app: &Arc<App>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (parts, body) = req.into_parts();
    let mut new: NewProcess = body::json(&parts.headers, body, app.config.max_body).await?;
    let (cwd, env) = (new.cwd.take(), new.env.take());
    match &new.command {
        Some(_) if !app.config.allow_exec => return Err(ApiError::ExecDisabled),
        None if cwd.is_some() || env.is_some() => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "`cwd` and `env` are only allowed together with `command`",
            ));
        }
        Some(_) if new.status.is_some_and(|s| s != Status::Running) => {
            return Err(ApiError::bad_request(
                "invalid_field",
                "a process with a `command` starts `running`",
            ));
        }
        _ => {}
    }
    let mut p = app.store.create_process(new).await?;
    if p.command.is_some() && app.runner.start(&p, cwd, env.unwrap_or_default()).await.is_err() {
        // Refused: the runner ended the record `failed` with the reason.
        // The create itself succeeded; answer with the record as it is now.
        p = app.store.get_process(&p.id).unwrap_or(p);
    }
    let mut resp = response::json(StatusCode::CREATED, &p);
    let location = HeaderValue::from_str(&format!("/api/processes/{}", p.id)).expect("ids are header-safe");
    resp.headers_mut().insert(LOCATION, location);
    Ok(resp)
}

/// The parameters of [`list`].
pub const LIST_PARAMS: Params = Params::once(&["workspace", "status", "limit", "cursor"]);

/// Newest first; `Link: <…>; rel="next"` when more pages follow. A record
/// deleted while the page is being written is left out.
pub fn list(app: &App, q: &Query) -> Result<Resp, ApiError> {
    let status = q.get("status").map(status_filter).transpose()?;
    let limit = q
        .u64("limit")?
        .map(|n| match usize::try_from(n) {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            // Regression: out of range was the store's `invalid_field`,
            // unlike every other bad query parameter.
            _ => Err(ApiError::bad_request(
                "invalid_query",
                format!("query parameter `limit` must be between 1 and {MAX_LIMIT}, got {n}"),
            )),
        })
        .transpose()?;
    let lq = ListQuery {
        workspace: q.get("workspace").filter(|w| !w.is_empty()).map(str::to_owned),
        status,
        limit,
        cursor: q.get("cursor").filter(|c| !c.is_empty()).map(str::to_owned),
    };
    // The page (its records and the next cursor) is chosen now; records
    // are serialized as the client reads (regression: the whole page was
    // built in memory first, 10,000 records per client that did not read).
    let mut page = app.store.list_processes_lazy(&lq)?;
    let next_cursor = page.next_cursor.take();
    let mut resp = response::json_array(StatusCode::OK, move || page.next_record());
    if let Some(cursor) = &next_cursor {
        let link = next_link(&lq, cursor);
        resp.headers_mut()
            .insert(LINK, HeaderValue::from_str(&link).expect("encoded link is header-safe"));
    }
    Ok(resp)
}

/// `?status=running,queued`: one status or a comma list. Empty is a 400
/// like any other bad value (regression: `?status=` listed everything,
/// so a client that built an empty list got every record).
fn status_filter(s: &str) -> Result<StatusSet, ApiError> {
    s.parse::<StatusSet>()
        .map_err(|e| ApiError::bad_request("invalid_query", format!("query parameter `status`: {e}")))
}

/// The `Link` of the next page: same filters, the new cursor. The status
/// list's commas are encoded: a `Link` header separates its links by
/// commas.
fn next_link(q: &ListQuery, cursor: &str) -> String {
    let mut params = Vec::new();
    if let Some(w) = &q.workspace {
        params.push(format!("workspace={}", encode_component(w)));
    }
    if let Some(s) = q.status {
        params.push(format!("status={}", encode_component(&s.to_string())));
    }
    if let Some(l) = q.limit {
        params.push(format!("limit={l}"));
    }
    params.push(format!("cursor={}", encode_component(cursor)));
    format!("</api/processes?{}>; rel=\"next\"", params.join("&"))
}

pub fn get(app: &App, id: &Id) -> Result<Resp, ApiError> {
    Ok(response::json(StatusCode::OK, &app.store.get_process(id)?))
}

/// A terminal `status` ends the followers' streams; `cancelled` on a
/// running server-run command stops the command too (the runner knows how).
pub async fn patch(app: &Arc<App>, id: &Id, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (parts, body) = req.into_parts();
    let patch: ProcessPatch = body::json(&parts.headers, body, app.config.max_body).await?;
    let p = app.runner.update_process(id, patch).await?;
    Ok(response::json(StatusCode::OK, &p))
}

pub async fn delete(app: &Arc<App>, id: &Id) -> Result<Resp, ApiError> {
    app.store.delete_process(id).await?;
    Ok(response::empty(StatusCode::NO_CONTENT))
}

/// A server-run command goes to the runner (SIGTERM, then SIGKILL); any
/// other process is just marked cancelled. 409 when already finished.
pub async fn cancel(app: &Arc<App>, id: &Id) -> Result<Resp, ApiError> {
    let p = app.runner.cancel(id).await?;
    Ok(response::json(StatusCode::OK, &p))
}

/// The parameters of [`prune`].
pub const PRUNE_PARAMS: Params = Params::once(&["max_age", "max_count"]);

/// `POST /api/prune?max_age=7d&max_count=100` → `{removed}`.
pub async fn prune(app: &Arc<App>, q: &Query) -> Result<Resp, ApiError> {
    let max_age = q
        .get("max_age")
        .map(|s| crate::model::parse_duration(s).map_err(|e| ApiError::bad_request("invalid_query", e)))
        .transpose()?;
    let max_count = q.u64("max_count")?.map(|n| n.min(usize::MAX as u64) as usize);
    let removed = app.store.prune(Retention { max_age, max_count }).await?;
    Ok(response::json(StatusCode::OK, &json!({ "removed": removed })))
}
