//! Routing by hand: the decoded path picks a [`Route`], the method picks
//! the handler (or a 405 with `Allow`). The `Host`/`Origin` guard, auth
//! and CORS wrap every route, and the query string is checked against the
//! route's [`Route::params`]; every error, including a bad path, leaves
//! here as JSON.

use std::sync::Arc;

use http::{Method, Request};
use hyper::body::Incoming;

use super::error::ApiError;
use super::handlers::{health, output, processes, workspaces};
use super::response::Resp;
use super::url::{self, Params, Query, segments};
use super::{App, access_log, auth, cors, events, limits, openapi, origin, scrape, sse, ws};
use crate::model::Id;

/// A known path, with its (validated) id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Health,
    Workspaces,
    Workspace(Id),
    Processes,
    Process(Id),
    Output(Id),
    Cancel(Id),
    Stream(Id),
    Prune,
    Events,
    Ws,
    Metrics,
    OpenApi,
}

impl Route {
    /// Parses decoded path segments. An id position is validated before
    /// anything after it is looked at, so `/api/processes/../x` is a 400.
    pub fn parse(segs: &[String]) -> Result<Route, ApiError> {
        let s: Vec<&str> = segs.iter().map(String::as_str).collect();
        let id = |raw: &str, what: &'static str| crate::store::StoreError::parse_id(what, raw).map_err(ApiError::Store);
        Ok(match s.as_slice() {
            ["healthz"] => Route::Health,
            ["ws"] => Route::Ws,
            ["api", "workspaces"] => Route::Workspaces,
            ["api", "workspaces", w] => Route::Workspace(id(w, "workspace")?),
            ["api", "processes"] => Route::Processes,
            ["api", "processes", p] => Route::Process(id(p, "process")?),
            ["api", "processes", p, sub] => {
                let p = id(p, "process")?;
                match *sub {
                    "output" => Route::Output(p),
                    "cancel" => Route::Cancel(p),
                    "stream" => Route::Stream(p),
                    _ => return Err(no_route(segs)),
                }
            }
            ["api", "workspaces", w, ..] | ["api", "processes", w, ..] => {
                id(w, "id")?;
                return Err(no_route(segs));
            }
            ["api", "prune"] => Route::Prune,
            ["api", "events"] => Route::Events,
            ["metrics"] => Route::Metrics,
            ["api", "openapi.json"] => Route::OpenApi,
            _ => return Err(no_route(segs)),
        })
    }

    /// The `Allow` header of this route.
    pub fn allow(&self) -> &'static str {
        match self {
            Route::Ws => "GET, OPTIONS",
            Route::Health | Route::Stream(_) | Route::Events | Route::Metrics | Route::OpenApi => "GET, HEAD, OPTIONS",
            Route::Workspaces | Route::Processes | Route::Output(_) => "GET, HEAD, POST, OPTIONS",
            Route::Workspace(_) => "GET, HEAD, DELETE, OPTIONS",
            Route::Process(_) => "GET, HEAD, PATCH, DELETE, OPTIONS",
            Route::Cancel(_) | Route::Prune => "POST, OPTIONS",
        }
    }

    /// The query parameters `method` on this route accepts (besides
    /// `access_token` where auth applies); None for a method the route
    /// does not allow (its 405 comes from `dispatch`). The sets of the
    /// handlers here sit beside the code that reads them; the OpenAPI test
    /// checks the document lists exactly these for every route and method.
    pub fn params(&self, method: &Method) -> Option<Params> {
        use Method as M;
        use Route as R;
        // HEAD is GET, as in `dispatch` (but on `/ws`, where it is a 405).
        let method = if method == M::HEAD && *self != R::Ws {
            &M::GET
        } else {
            method
        };
        Some(match (method, self) {
            (&M::DELETE, R::Workspace(_)) => workspaces::DELETE_PARAMS,
            (&M::GET, R::Processes) => processes::LIST_PARAMS,
            (&M::POST, R::Prune) => processes::PRUNE_PARAMS,
            (&M::GET, R::Output(_)) => url::OUTPUT_READ_PARAMS,
            (&M::POST, R::Output(_)) => url::OUTPUT_APPEND_PARAMS,
            (&M::GET, R::Stream(_)) => url::FOLLOW_PARAMS,
            (&M::GET, R::Events | R::Ws) => url::EVENTS_PARAMS,
            (&M::GET, R::Health | R::Workspaces | R::Workspace(_) | R::Process(_))
            | (&M::GET, R::Metrics | R::OpenApi)
            | (&M::POST, R::Workspaces | R::Processes | R::Cancel(_))
            | (&M::PATCH | &M::DELETE, R::Process(_)) => url::NO_PARAMS,
            _ => return None,
        })
    }

    /// The route's pattern, as `/api/processes/:id`: the `route` label of
    /// the request metrics and the access log (never the raw path), and
    /// with `{id}` for `:id`, the path in the OpenAPI document.
    pub fn pattern(&self) -> &'static str {
        match self {
            Route::Health => "/healthz",
            Route::Workspaces => "/api/workspaces",
            Route::Workspace(_) => "/api/workspaces/:id",
            Route::Processes => "/api/processes",
            Route::Process(_) => "/api/processes/:id",
            Route::Output(_) => "/api/processes/:id/output",
            Route::Cancel(_) => "/api/processes/:id/cancel",
            Route::Stream(_) => "/api/processes/:id/stream",
            Route::Prune => "/api/prune",
            Route::Events => "/api/events",
            Route::Ws => "/ws",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/api/openapi.json",
        }
    }
}

/// Every route's pattern. A new route goes here too: the OpenAPI test
/// walks this list (with `Route::parse` and `Route::allow`) and fails on a
/// route or method the document lacks.
#[cfg(test)]
pub const PATTERNS: &[&str] = &[
    "/healthz",
    "/api/workspaces",
    "/api/workspaces/:id",
    "/api/processes",
    "/api/processes/:id",
    "/api/processes/:id/output",
    "/api/processes/:id/cancel",
    "/api/processes/:id/stream",
    "/api/prune",
    "/api/events",
    "/ws",
    "/metrics",
    "/api/openapi.json",
];

fn no_route(segs: &[String]) -> ApiError {
    ApiError::NoRoute {
        path: format!("/{}", segs.join("/")),
    }
}

/// Entry point of every request: never fails, every error becomes a JSON
/// response carrying the CORS headers too.
pub async fn handle(app: Arc<App>, req: Request<Incoming>) -> Resp {
    let observed = access_log::Observed::start(&req);
    let mut route = crate::metrics::UNMATCHED_ROUTE;
    let mut resp = match route_and_dispatch(&app, req, &mut route).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    };
    cors::decorate(app.config.cors_origin.as_deref(), resp.headers_mut());
    observed.finish(route, resp)
}

async fn route_and_dispatch(
    app: &Arc<App>,
    req: Request<Incoming>,
    label: &mut &'static str,
) -> Result<Resp, ApiError> {
    limits::check(&req)?;
    let segs = segments(req.uri().path())?;
    // Parsed early for the metrics label; its error still comes after auth.
    let parsed = Route::parse(&segs);
    if let Ok(route) = &parsed {
        *label = route.pattern();
    }
    // Before anything is dispatched: a refused request changes nothing,
    // and `/ws` (as routed, so `/%77s` too) is refused before its upgrade.
    let to_ws = matches!(parsed, Ok(Route::Ws));
    origin::check(&app.hosts, app.config.cors_origin.as_deref(), &req, to_ws)?;
    let mut query = Query::parse(req.uri().query())?;
    let protected = matches!(segs.first().map(String::as_str), Some("api" | "ws" | "metrics"));
    // Preflights carry no credentials: answer them before auth.
    if req.method() != Method::OPTIONS && protected {
        auth::check(app.config.token.as_deref(), req.headers(), &query)?;
    }
    let route = parsed?;
    if req.method() == Method::OPTIONS {
        return Ok(cors::preflight(app.config.cors_origin.as_deref(), route.allow()));
    }
    // After auth (a stranger learns nothing about the parameters), before
    // the handler (a refused request changes nothing). A method the route
    // does not allow goes on to its 405.
    if let Some(params) = route.params(req.method()) {
        query.check(params, protected)?;
    }
    dispatch(app, req, route, query).await
}

async fn dispatch(app: &Arc<App>, req: Request<Incoming>, route: Route, q: Query) -> Result<Resp, ApiError> {
    use Method as M;
    use Route as R;
    // HEAD is GET without the body (RFC 9110: every general-purpose server
    // supports both); hyper leaves the body out. Regression: HEAD was 405.
    let method = match req.method() {
        &M::HEAD if route != R::Ws => M::GET,
        m => m.clone(),
    };
    match (method, route) {
        (M::GET, R::Health) => Ok(health::get(app)),
        (M::GET, R::Workspaces) => Ok(workspaces::list(app)),
        (M::POST, R::Workspaces) => workspaces::create(app, req).await,
        (M::GET, R::Workspace(id)) => workspaces::get(app, &id),
        (M::DELETE, R::Workspace(id)) => workspaces::delete(app, &id, &q).await,
        (M::GET, R::Processes) => processes::list(app, &q),
        (M::POST, R::Processes) => processes::create(app, req).await,
        (M::GET, R::Process(id)) => processes::get(app, &id),
        (M::PATCH, R::Process(id)) => processes::patch(app, &id, req).await,
        (M::DELETE, R::Process(id)) => processes::delete(app, &id).await,
        (M::POST, R::Cancel(id)) => processes::cancel(app, &id).await,
        (M::GET, R::Output(id)) => output::read(app, &id, &q).await,
        (M::POST, R::Output(id)) => output::append(app, &id, req, &q).await,
        (M::GET, R::Stream(id)) => sse::follow(app, &id, &req, &q),
        (M::POST, R::Prune) => processes::prune(app, &q).await,
        (M::GET, R::Events) => events::sse(app, &req, &q),
        (M::GET, R::Ws) => ws::upgrade(app, req, &q),
        (M::GET, R::Metrics) => Ok(scrape::get(app, req.headers())),
        (M::GET, R::OpenApi) => Ok(openapi::get()),
        (method, route) => Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            allow: route.allow(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(p: &str) -> Result<Route, ApiError> {
        Route::parse(&segments(p).unwrap())
    }

    #[test]
    fn routes_and_bad_ids() {
        assert_eq!(
            parse("/api/processes/abc/stream").unwrap(),
            Route::Stream(Id::parse("abc").unwrap())
        );
        assert_eq!(parse("/api/processes/").unwrap(), Route::Processes);
        assert!(matches!(parse("/api/processes/../x"), Err(ApiError::Store(_))));
        assert!(matches!(parse("/api/processes/a%2Fb"), Err(ApiError::Store(_))));
        assert!(matches!(parse("/api/processes/a%00b"), Err(ApiError::Store(_))));
        assert!(matches!(
            parse("/api/processes/abc/nope"),
            Err(ApiError::NoRoute { .. })
        ));
        assert!(matches!(parse("/nope"), Err(ApiError::NoRoute { .. })));
    }
}
