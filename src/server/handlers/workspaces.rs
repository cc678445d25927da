//! `/api/workspaces`: register, list, get, delete (with `?cascade=true`).

use std::sync::Arc;

use http::{Request, StatusCode};
use hyper::body::Incoming;

use crate::model::{Id, NewWorkspace};
use crate::server::error::ApiError;
use crate::server::response::{self, Resp};
use crate::server::url::{Params, Query};
use crate::server::{App, body};

/// 201 when created, 200 with the stored record when the id exists.
pub async fn create(app: &Arc<App>, req: Request<Incoming>) -> Result<Resp, ApiError> {
    let (parts, body) = req.into_parts();
    let new: NewWorkspace = body::json(&parts.headers, body, app.config.max_body).await?;
    let (w, created) = app.store.create_workspace(new).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok(response::json(status, &w))
}

/// Every workspace, serialized as the client reads (like the process list).
pub fn list(app: &App) -> Resp {
    let mut all = app.store.list_workspaces().into_iter();
    response::json_array(StatusCode::OK, move || all.next())
}

pub fn get(app: &App, id: &Id) -> Result<Resp, ApiError> {
    Ok(response::json(StatusCode::OK, &app.store.get_workspace(id)?))
}

/// The parameters of [`delete`].
pub const DELETE_PARAMS: Params = Params::once(&["cascade"]);

pub async fn delete(app: &Arc<App>, id: &Id, q: &Query) -> Result<Resp, ApiError> {
    let cascade = q.bool("cascade")?;
    app.store.delete_workspace(id, cascade).await?;
    Ok(response::empty(StatusCode::NO_CONTENT))
}
