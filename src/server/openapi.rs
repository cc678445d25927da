//! `GET /api/openapi.json`: the OpenAPI 3.1 document of the whole HTTP
//! API (SPEC section 12), written here by hand and built once.
//!
//! # How it stays true
//! * The test below walks the router's `router::PATTERNS` and
//!   every method each route allows, and fails on any route or method the
//!   document lacks, or any path it has that the router does not; and on
//!   any operation whose query parameters are not exactly the route's
//!   `Route::params` (the set the router enforces).
//! * `scripts/schemathesis` (run by `.ci/run`) drives a real server with
//!   requests generated from this document and checks every response
//!   against it: status codes, content types, headers, bodies.
//!
//! `HEAD` (wherever `GET` works but `/ws`) and `OPTIONS` (every known
//! path) are not listed per operation: they are the same everywhere, and
//! the document's description says so.

use std::sync::LazyLock;

use bytes::Bytes;
use http::StatusCode;
use serde_json::{Map, Value, json};

use super::response::{self, Resp};

/// An id as the API takes it (`model::Id`).
pub const ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";
/// A name: at least one character that is not whitespace (as Rust's
/// `char::is_whitespace` sees it; the store refuses blank names).
const NAME_PATTERN: &str =
    "[^\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000]";
/// A list cursor: `<seconds>.<nanoseconds>.<id>`, or the older `<millis>.<id>`.
const CURSOR_PATTERN: &str = "^$|^(-?[0-9]{1,11}\\.[0-9]{1,9}|-?[0-9]{1,14})\\.[A-Za-z0-9_-]{1,64}$";
/// A status list (`running,queued`), as `model::StatusSet` parses it.
const STATUS_LIST_PATTERN: &str =
    "^(queued|running|completed|failed|cancelled)(,(queued|running|completed|failed|cancelled))*$";
/// `Prochub-Elided: A-B`.
const RANGE_PATTERN: &str = "^[0-9]{1,20}-[0-9]{1,20}$";

/// A humantime duration such as `7d`, `2h 30m` or `90s` (the common forms),
/// or a bare `0`.
const DURATION_PATTERN: &str = concat!(
    "^0$|^[0-9]{1,9}(nanos|nsec|ns|usec|us|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|",
    "hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)",
    "( ?[0-9]{1,9}(nanos|nsec|ns|usec|us|millis|msec|ms|seconds|second|secs|sec|s|minutes|minute|mins|min|m|",
    "hours|hour|hrs|hr|h|days|day|d|weeks|week|wks|wk|w|months|month|M|years|year|yrs|yr|y)){0,3}$"
);

/// The document, serialized once.
static DOCUMENT: LazyLock<Bytes> =
    LazyLock::new(|| Bytes::from(serde_json::to_vec(&document()).expect("the document serializes")));

pub fn get() -> Resp {
    response::with_type(StatusCode::OK, response::full(DOCUMENT.clone()), "application/json")
}

fn schema(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// A JSON error response listing the `code`s it may carry.
fn error(description: &str, codes: &[&str]) -> Value {
    let codes: Vec<String> = codes.iter().map(|c| format!("`{c}`")).collect();
    json!({
        "description": format!("{description} (code {})", codes.join(", ")),
        "content": { "application/json": { "schema": schema("Error") } },
    })
}

fn json_response(description: &str, body: Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": body } } })
}

/// Responses every operation may give besides its own: the limits on the
/// request head and a server fault.
fn common(responses: &mut Map<String, Value>, protected: bool) {
    if protected {
        responses.insert(
            "401".into(),
            json!({
                "description": "A token is configured and the request has none or a wrong one (code `unauthorized`)",
                "headers": { "WWW-Authenticate": { "schema": { "type": "string", "const": "Bearer" } } },
                "content": { "application/json": { "schema": schema("Error") } },
            }),
        );
    }
    responses.insert(
        "421".into(),
        error(
            "`Host` is not this server: not its bound address, `localhost` or an `--allowed-host` name (DNS rebinding)",
            &["misdirected_host"],
        ),
    );
    responses.insert("414".into(), error("Request line over 8 KiB", &["uri_too_long"]));
    responses.insert(
        "431".into(),
        error("Request headers over 64 KiB or 100 fields", &["headers_too_large"]),
    );
    responses.insert(
        "500".into(),
        error("Server fault; details are in the server's log", &["internal"]),
    );
    // The store's disk faults, each naming the file (`processes/ID.json`).
    responses.insert(
        "503".into(),
        json!({
            "description": "The data folder cannot be written (code `read_only`), or the server is out of file descriptors for now (code `busy`, with `Retry-After`)",
            "headers": { "Retry-After": { "schema": { "type": "integer", "minimum": 0 } } },
            "content": { "application/json": { "schema": schema("Error") } },
        }),
    );
    responses.insert(
        "507".into(),
        error(
            "The disk (or quota) of the data folder is full",
            &["insufficient_storage"],
        ),
    );
}

/// Responses of every operation that reads a body (issue 8): it must
/// arrive within `--body-timeout`, and fit `--body-budget` with the
/// bodies being read at the same time.
fn body_limits(responses: &mut Map<String, Value>) {
    responses.insert(
        "408".into(),
        error(
            "The body did not arrive in full within `--body-timeout` (default 30 s)",
            &["request_timeout"],
        ),
    );
    responses.insert(
        "503".into(),
        json!({
            "description": "Too many bodies being read at once (`--body-budget`); retry after `Retry-After` seconds (code `busy`)",
            "headers": { "Retry-After": { "schema": { "type": "integer", "minimum": 0 } } },
            "content": { "application/json": { "schema": schema("Error") } },
        }),
    );
}

fn path_id(what: &str) -> Value {
    json!({
        "name": "id", "in": "path", "required": true,
        "description": format!("The {what}'s id. `..`, `%2F`, NUL or over-long ids are a 400 `invalid_id`."),
        "schema": schema("Id"),
    })
}

fn query(name: &str, description: &str, schema: Value) -> Value {
    json!({ "name": name, "in": "query", "required": false, "description": description, "schema": schema })
}

/// A required request header matching `pattern`.
fn header(name: &str, description: &str, pattern: &str) -> Value {
    json!({ "name": name, "in": "header", "required": true, "description": description,
            "schema": { "type": "string", "pattern": pattern } })
}

fn u64_schema() -> Value {
    json!({ "type": "integer", "minimum": 0, "maximum": u64::MAX })
}

/// One operation. `responses` are its own; [`common`] adds the rest.
fn op(id: &str, summary: &str, tag: &str, params: Vec<Value>, body: Option<Value>, responses: Value) -> Value {
    let protected = tag != "health";
    let mut responses = match responses {
        Value::Object(m) => m,
        _ => unreachable!("responses are an object"),
    };
    common(&mut responses, protected);
    if body.is_some() {
        body_limits(&mut responses);
    }
    let mut o = json!({
        "operationId": id,
        "summary": summary,
        "tags": [tag],
        "responses": responses,
    });
    if !params.is_empty() {
        o["parameters"] = Value::Array(params);
    }
    if let Some(b) = body {
        o["requestBody"] = b;
    }
    if !protected {
        o["security"] = json!([]);
    }
    o
}

fn json_body(schema_name: &str, extra_types: &[&str]) -> Value {
    let mut content = Map::new();
    content.insert("application/json".into(), json!({ "schema": schema(schema_name) }));
    for t in extra_types {
        content.insert((*t).into(), json!({ "schema": schema(schema_name) }));
    }
    json!({ "required": true, "content": content })
}

fn bad_body() -> Value {
    error(
        "Invalid body: not JSON, a missing, invalid or unknown field, a bad id",
        &[
            "invalid_json",
            "invalid_field",
            "invalid_id",
            "body_read_failed",
            "malformed_request",
        ],
    )
}

fn too_large() -> Value {
    error("Body over `--max-body` (default 1 MiB)", &["body_too_large"])
}

fn unsupported() -> Value {
    error("Other content type", &["unsupported_media_type"])
}

fn bad_id() -> Value {
    error(
        "A bad id in the path",
        &["invalid_id", "invalid_query", "invalid_encoding", "malformed_request"],
    )
}

fn sse_response(events: &str) -> Value {
    json!({
        "description": format!("A Server-Sent Events stream (`Cache-Control: no-cache, no-store, no-transform`, `X-Accel-Buffering: no`). {events}"),
        "content": { "text/event-stream": { "schema": { "type": "string" } } },
    })
}

fn paths() -> Value {
    let workspace_id = || path_id("workspace");
    let process_id = || path_id("process");
    json!({
        "/healthz": { "get": op("health", "Liveness and a few gauges; never needs the token", "health", vec![], None, json!({
            "200": json_response("The server is up", schema("Health")),
        })) },
        "/api/workspaces": {
            "get": op("listWorkspaces", "Every workspace", "workspaces", vec![], None, json!({
                "200": json_response("The workspaces", json!({ "type": "array", "items": schema("Workspace") })),
            })),
            "post": op("createWorkspace", "Register a workspace (idempotent on its id)", "workspaces", vec![], Some(json_body("NewWorkspace", &[])), json!({
                "201": json_response("Created", schema("Workspace")),
                "200": json_response("A workspace with this id exists: the stored record", schema("Workspace")),
                "400": bad_body(),
                "413": too_large(),
                "415": unsupported(),
            })),
        },
        "/api/workspaces/{id}": {
            "get": op("getWorkspace", "One workspace", "workspaces", vec![workspace_id()], None, json!({
                "200": json_response("The workspace", schema("Workspace")),
                "400": bad_id(),
                "404": error("No such workspace", &["not_found"]),
            })),
            "delete": op("deleteWorkspace", "Delete a workspace (its processes too with `cascade`)", "workspaces", vec![
                workspace_id(),
                query("cascade", "Also delete the workspace's processes", json!({ "type": "string", "enum": ["true", "false", "1", "0", ""] })),
            ], None, json!({
                "204": { "description": "Deleted" },
                "400": bad_id(),
                "404": error("No such workspace", &["not_found"]),
                "409": error("The workspace has processes and `cascade` is not set, or it is `default`", &["workspace_not_empty", "default_workspace"]),
            })),
        },
        "/api/processes": {
            "get": op("listProcesses", "Processes, newest first, a page at a time", "processes", vec![
                query("workspace", "Only this workspace's processes (empty: all)", json!({ "type": "string", "pattern": "^[A-Za-z0-9_-]{0,64}$" })),
                query("status", "Only processes with one of these statuses: one, or a comma list (`running,queued`); absent: all", json!({ "type": "string", "pattern": STATUS_LIST_PATTERN })),
                query("limit", "Page size (default 1000)", json!({ "type": "integer", "minimum": 1, "maximum": 10000 })),
                query("cursor", "Where the page starts: the `cursor` of the previous page's `Link` (empty: the start)", json!({ "type": "string", "pattern": CURSOR_PATTERN })),
            ], None, json!({
                "200": {
                    "description": "A page of processes",
                    "headers": { "Link": { "description": "`</api/processes?…&cursor=…>; rel=\"next\"` when more pages follow", "schema": { "type": "string" } } },
                    "content": { "application/json": { "schema": { "type": "array", "items": schema("Process") } } },
                },
                "400": error("A bad filter, limit or cursor", &["invalid_query", "invalid_cursor", "invalid_id", "invalid_encoding"]),
            })),
            "post": op("createProcess", "Register a process (or have the server run `command`)", "processes", vec![], Some(json_body("NewProcess", &[])), json!({
                "201": {
                    "description": "Created",
                    "headers": { "Location": { "description": "`/api/processes/ID`", "required": true, "schema": { "type": "string" } } },
                    "content": { "application/json": { "schema": schema("Process") } },
                },
                "400": error("Invalid body, or a workspace that is not registered", &["invalid_json", "invalid_field", "invalid_id", "unknown_workspace", "body_read_failed", "malformed_request"]),
                "403": error("`command` given but the server runs without `--allow-exec`", &["exec_disabled"]),
                "409": error("A process with this id exists; it is in `existing`", &["already_exists"]),
                "413": too_large(),
                "415": unsupported(),
            })),
        },
        "/api/processes/{id}": {
            "get": op("getProcess", "One process", "processes", vec![process_id()], None, json!({
                "200": json_response("The process", schema("Process")),
                "400": bad_id(),
                "404": error("No such process", &["not_found"]),
            })),
            "patch": op("updateProcess", "JSON merge patch (RFC 7396) of the editable fields; a terminal status ends its followers' streams", "processes", vec![process_id()], Some(json_body("ProcessPatch", &["application/merge-patch+json"])), json!({
                "200": json_response("The updated process", schema("Process")),
                "400": bad_body(),
                "404": error("No such process", &["not_found"]),
                "409": error("A move the status machine forbids (a terminal status never changes)", &["invalid_transition"]),
                "413": too_large(),
                "415": unsupported(),
            })),
            "delete": op("deleteProcess", "Delete a process and its output; a running one's followers get `status` (cancelled) and `done`", "processes", vec![process_id()], None, json!({
                "204": { "description": "Deleted" },
                "400": bad_id(),
                "404": error("No such process", &["not_found"]),
            })),
        },
        "/api/processes/{id}/output": {
            "get": op("readOutput", "The stored output, filtered in this order: the byte range (`offset` or `tail`), the appends stored in `since..=until`, those of one `stream`, the last `lines` lines of that; with `timestamps`, each line prefixed by its append's time", "output", vec![
                process_id(),
                query("offset", "From this byte offset (not with `tail`)", u64_schema()),
                query("tail", "The last N bytes (not with `offset`)", u64_schema()),
                query("since", "Only appends stored at or after this time: a humantime duration back from now (`10m`, `2h 30m`; `M` is months, `m` minutes) or an RFC 3339 time", json!({ "type": "string", "minLength": 1 })),
                query("until", "Only appends stored at or before this time (as `since`)", json!({ "type": "string", "minLength": 1 })),
                query("lines", "Only the last N lines of what the other parameters select (a last line without `\\n` counts)", u64_schema()),
                query("timestamps", "Prefix each line with the RFC 3339 time (UTC, milliseconds) of the append its first byte is in, and a space", json!({ "type": "string", "enum": ["true", "false", "1", "0", ""] })),
                query("stream", "Only appends from this pipe (appends without one are left out)", json!({ "type": "string", "enum": ["stdout", "stderr"] })),
            ], None, json!({
                "200": {
                    "description": "The output as UTF-8 text; a range starting inside a character starts at the next one. Where the range crosses the elided middle of a capped output, one line `[… N bytes elided …]` stands for it",
                    "headers": {
                        "Prochub-Output-End": { "description": "Where the stored output ended when the read began: a follower continues with `?from=N`", "required": true, "schema": u64_schema() },
                        "Prochub-Elided": { "description": "`A-B`: the range includes the elided bytes `[A, B)`", "schema": { "type": "string", "pattern": RANGE_PATTERN } },
                    },
                    "content": { "text/plain": { "schema": { "type": "string" } } },
                },
                "400": error("A bad id, a bad parameter value, or both `offset` and `tail`", &["invalid_id", "invalid_query", "invalid_encoding"]),
                "404": error("No such process", &["not_found"]),
            })),
            "post": op("appendOutput", "Append output to a running process", "output", vec![
                process_id(),
                query("at", "Append only if the stored output ends at this offset (a producer's safe retry): else 409 `offset_mismatch` with the current `output_bytes`. A 409 whose `output_bytes` is `at` plus the content's length means an earlier attempt was stored", u64_schema()),
            ], Some(json!({
                "required": true,
                "content": {
                    "application/json": { "schema": schema("Append") },
                    "text/plain": { "schema": { "type": "string" } },
                },
            })), json!({
                "202": json_response("Appended", schema("Appended")),
                "400": bad_body(),
                "404": error("No such process", &["not_found"]),
                "409": error("The process is not running, or `at` is not where its output ends (`output_bytes` says where)", &["not_running", "offset_mismatch"]),
                "413": too_large(),
                "415": unsupported(),
            })),
        },
        "/api/processes/{id}/cancel": {
            "post": op("cancelProcess", "Cancel: a server-run command gets SIGTERM, then SIGKILL; any other process is marked cancelled", "processes", vec![process_id()], None, json!({
                "200": json_response("The cancelled process", schema("Process")),
                "400": bad_id(),
                "404": error("No such process", &["not_found"]),
                "409": error("The process is finished already", &["invalid_transition"]),
            })),
        },
        "/api/processes/{id}/stream": {
            "get": op("followOutput", "Follow a process's output live (SSE)", "output", vec![
                process_id(),
                query("from", "Replay stored output from this byte offset first (`Last-Event-ID` wins when both are sent)", u64_schema()),
                json!({ "name": "Last-Event-ID", "in": "header", "required": false, "description": "Resume after this byte offset (EventSource sends it on reconnect)", "schema": { "type": "string", "pattern": "^\\s*[0-9]{1,19}\\s*$" } }),
            ], None, json!({
                "200": sse_response("Starts with `retry: 2000`. Events: `chunk` (`id:` is the byte offset after it; data `{content, ts, stream?}`: `ts` when the server stored the append, RFC 3339 UTC with milliseconds; `stream` the pipe, when it has one), `lagged` (data `{from, to}`: output that was never stored went by), `status` (data: the final status, duration, result, error, exit code), `done` (data `{process_id}`; the stream then ends), `heartbeat` (data `{}`, while idle). A running process streams until it finishes; a finished one gets `status` and `done` at once."),
                "400": error("A bad id, `from` or `Last-Event-ID`", &["invalid_id", "invalid_query", "invalid_last_event_id", "invalid_encoding"]),
                "404": error("No such process", &["not_found"]),
            })),
        },
        "/api/prune": {
            "post": op("prune", "Remove finished processes (and their output) by age and count; never queued or running ones", "processes", vec![
                query("max_age", "Remove those that ended longer ago than this (humantime: `7d`, `12h`; `M` is months, `m` minutes)", json!({ "type": "string", "pattern": DURATION_PATTERN })),
                query("max_count", "Keep at most this many finished processes (the newest)", u64_schema()),
            ], None, json!({
                "200": json_response("Pruned", schema("Pruned")),
                "400": error("A bad `max_age` or `max_count`", &["invalid_query", "invalid_encoding"]),
            })),
        },
        "/api/events": {
            "get": op("events", "Lifecycle events (SSE)", "events", vec![
                query("workspace", "Only this workspace's events (empty: all)", json!({ "type": "string", "pattern": "^[A-Za-z0-9_-]{0,64}$" })),
                json!({ "name": "Last-Event-ID", "in": "header", "required": false, "description": "`EPOCH-SEQ` of the last event seen: replays what was missed, or sends `reset`", "schema": { "type": "string" } }),
            ], None, json!({
                "200": sse_response("Starts with a `: connected` comment and `retry: 2000`. Events are named after their type: `process-added`, `process-updated`, `process-removed`, `workspace-added`, `workspace-removed` (`id:` is `EPOCH-SEQ`, data a LifecycleEvent); `reset` (data `{}`: re-list, the missed events cannot be replayed); `heartbeat` (data `{}`, while idle). Never ends by itself."),
                "400": error("A bad workspace id", &["invalid_id", "invalid_encoding"]),
            })),
        },
        "/ws": {
            "get": op("websocket", "Lifecycle events over a WebSocket: each event a text frame (a LifecycleEvent); a socket that falls behind the event ring is closed with 1013 and a reason (reconnect and re-list); pings every heartbeat", "events", vec![
                query("workspace", "Only this workspace's events (empty: all)", json!({ "type": "string", "pattern": "^[A-Za-z0-9_-]{0,64}$" })),
                header("Connection", "A token list with `Upgrade`", "(^|,)[ \\t]*[Uu][Pp][Gg][Rr][Aa][Dd][Ee][ \\t]*(,|$)"),
                header("Upgrade", "A token list with `websocket`", "(^|,)[ \\t]*[Ww][Ee][Bb][Ss][Oo][Cc][Kk][Ee][Tt][ \\t]*(,|$)"),
                header("Sec-WebSocket-Key", "16 random bytes, base64 (RFC 6455)", "^[A-Za-z0-9+/]{21}[AQgw]==$"),
                header("Sec-WebSocket-Version", "`13`", "^13$"),
            ], None, json!({
                "101": { "description": "Switching to the WebSocket protocol" },
                "400": error("Not a WebSocket handshake (a header missing or wrong), or a bad workspace id", &["not_websocket", "invalid_id", "invalid_encoding"]),
            })),
        },
        "/metrics": {
            "get": op("metrics", "Prometheus metrics: OpenMetrics text when `Accept` asks for it (as Prometheus does), else the text format 0.0.4", "operations", vec![], None, json!({
                "200": {
                    "description": "The metrics",
                    "content": {
                        "text/plain": { "schema": { "type": "string" } },
                        "application/openmetrics-text": { "schema": { "type": "string" } },
                    },
                },
            })),
        },
        "/api/openapi.json": {
            "get": op("openapi", "This document", "operations", vec![], None, json!({
                "200": json_response("The OpenAPI 3.1 document", json!({ "type": "object" })),
            })),
        },
    })
}

fn nullable(t: &str) -> Value {
    json!({ "type": [t, "null"] })
}

fn schemas() -> Value {
    let ts = json!({ "type": "string", "format": "date-time" });
    let ts_or_null = json!({ "type": ["string", "null"], "format": "date-time" });
    let status = schema("Status");
    json!({
        "Id": { "type": "string", "pattern": ID_PATTERN },
        "Status": { "type": "string", "enum": ["queued", "running", "completed", "failed", "cancelled"] },
        "Error": {
            "type": "object",
            "required": ["error", "code"],
            "properties": {
                "error": { "type": "string", "description": "For people" },
                "code": { "type": "string", "description": "For programs" },
                "field": { "type": "string", "description": "The invalid field (`invalid_field` from the store)" },
                "existing": schema("Process"),
                "output_bytes": { "type": "integer", "minimum": 0, "description": "Where the output ends (`offset_mismatch`)" },
            },
            "additionalProperties": false,
        },
        "Health": {
            "type": "object",
            "description": "With `--token`, only `status` and `version`",
            "required": ["status", "version"],
            "properties": {
                "status": { "type": "string", "const": "ok" },
                "version": { "type": "string" },
                "uptime_s": { "type": "integer", "minimum": 0 },
                "processes": { "type": "integer", "minimum": 0 },
                "emitters": { "type": "integer", "minimum": 0 },
            },
            "additionalProperties": false,
        },
        "Workspace": {
            "type": "object",
            "required": ["id", "name", "root_path", "created_at"],
            "properties": {
                "id": schema("Id"),
                "name": { "type": "string" },
                "root_path": nullable("string"),
                "created_at": ts,
            },
            "additionalProperties": false,
        },
        "NewWorkspace": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "id": { "type": ["string", "null"], "pattern": ID_PATTERN, "description": "Chosen by the client; generated when absent" },
                "name": { "type": "string", "maxLength": 512, "pattern": NAME_PATTERN },
                "root_path": nullable("string"),
            },
            "additionalProperties": false,
        },
        "Process": {
            "type": "object",
            "required": ["id", "workspace", "name", "status", "created_at", "updated_at", "started_at", "ended_at",
                "duration", "result", "error", "metadata", "command", "exit_code", "output_bytes", "output_truncated", "output_elided"],
            "properties": {
                "id": schema("Id"),
                "workspace": schema("Id"),
                "name": { "type": "string" },
                "status": status,
                "created_at": ts,
                "updated_at": ts,
                "started_at": ts_or_null,
                "ended_at": ts_or_null,
                "duration": { "type": ["string", "null"], "description": "humantime, e.g. `2m 34s`, once terminal" },
                "result": { "description": "Any JSON, or null" },
                "error": nullable("string"),
                "metadata": { "type": "object" },
                "command": { "type": ["array", "null"], "items": { "type": "string" } },
                "exit_code": { "type": ["integer", "null"] },
                "exit_signal": { "type": "string", "description": "The signal that killed a server-run command, when one did" },
                "output_bytes": { "type": "integer", "minimum": 0, "description": "Byte offset of the end of the output: every byte appended, stored or elided" },
                "output_truncated": { "type": "boolean", "description": "The output passed `--max-output`: its middle is no longer stored" },
                "output_elided": { "type": "integer", "minimum": 0, "description": "Bytes between the kept head and the kept tail that are no longer stored" },
            },
            "additionalProperties": false,
        },
        "NewProcess": {
            "type": "object",
            "required": ["name"],
            "properties": {
                "id": { "type": ["string", "null"], "pattern": ID_PATTERN, "description": "Chosen by the client (offline queues); generated when absent" },
                "workspace": { "type": ["string", "null"], "pattern": ID_PATTERN, "description": "A registered workspace (default: `default`)" },
                "name": { "type": "string", "maxLength": 512, "pattern": NAME_PATTERN },
                "status": { "type": ["string", "null"], "enum": ["queued", "running", "completed", "failed", "cancelled", null], "description": "Default `running`" },
                "result": { "description": "Any JSON" },
                "error": nullable("string"),
                "metadata": { "type": ["object", "null"], "description": "At most 64 KiB as JSON" },
                "command": {
                    "type": ["array", "null"],
                    "description": "Run by the server (needs `--allow-exec`, else 403); the process then starts `running`",
                    "items": { "type": "string" },
                    "prefixItems": [{ "type": "string", "minLength": 1 }],
                    "minItems": 1,
                },
                "cwd": { "type": ["string", "null"], "description": "Working directory of `command`; only with `command`" },
                "env": { "type": ["object", "null"], "additionalProperties": { "type": "string" }, "description": "Extra environment of `command`; only with `command`" },
                "exit_code": { "type": ["integer", "null"], "minimum": i32::MIN, "maximum": i32::MAX },
            },
            // `cwd` and `env` (when not null) only together with a `command`.
            "allOf": [
                { "if": { "required": ["cwd"], "properties": { "cwd": { "type": "string" } } },
                  "then": { "required": ["command"], "properties": { "command": { "type": "array" } } } },
                { "if": { "required": ["env"], "properties": { "env": { "type": "object" } } },
                  "then": { "required": ["command"], "properties": { "command": { "type": "array" } } } },
            ],
            "additionalProperties": false,
        },
        "ProcessPatch": {
            "type": "object",
            "properties": {
                "name": { "type": "string", "maxLength": 512, "pattern": NAME_PATTERN },
                "status": schema("Status"),
                "result": { "description": "Any JSON; null clears it" },
                "error": { "type": ["string", "null"], "description": "null clears it" },
                "metadata": { "type": ["object", "null"], "description": "Merged key by key (RFC 7396); null clears it; at most 64 KiB as JSON" },
                "exit_code": { "type": ["integer", "null"], "minimum": i32::MIN, "maximum": i32::MAX },
            },
            "additionalProperties": false,
        },
        "Append": {
            "type": "object",
            "required": ["content"],
            "properties": {
                "content": { "type": "string" },
                "stream": { "type": ["string", "null"], "enum": ["stdout", "stderr", null], "description": "The pipe the content came from" },
            },
            "additionalProperties": false,
        },
        "Appended": {
            "type": "object",
            "required": ["output_bytes"],
            "properties": { "output_bytes": { "type": "integer", "minimum": 0 } },
            "additionalProperties": false,
        },
        "Pruned": {
            "type": "object",
            "required": ["removed"],
            "properties": { "removed": { "type": "integer", "minimum": 0 } },
            "additionalProperties": false,
        },
        "LifecycleEvent": {
            "type": "object",
            "required": ["type", "timestamp"],
            "properties": {
                "type": { "type": "string", "enum": ["process-added", "process-updated", "process-removed", "workspace-added", "workspace-removed"] },
                "process": schema("Process"),
                "workspace": schema("Workspace"),
                "timestamp": ts,
            },
        },
    })
}

/// Adds the 403 `forbidden_origin` of the `Origin` guard to every
/// operation it applies to (`server::origin`: every method but GET, and
/// GET `/ws`), next to an operation's own 403 codes where it has some.
fn with_origin_refusals(mut paths: Value) -> Value {
    const WHY: &str = "`Origin` is neither this server nor `--cors-origin`";
    let ops = paths.as_object_mut().expect("paths").iter_mut();
    for (path, methods) in ops {
        for (method, op) in methods.as_object_mut().expect("operations") {
            if method == "get" && path != "/ws" {
                continue;
            }
            let responses = op["responses"].as_object_mut().expect("responses");
            let refusal = match responses.get("403").and_then(|r| r["description"].as_str()) {
                Some(own) => {
                    let own = own.trim_end_matches(')');
                    json!({
                        "description": format!("{own}, `forbidden_origin`); or {WHY}"),
                        "content": { "application/json": { "schema": schema("Error") } },
                    })
                }
                None => error(WHY, &["forbidden_origin"]),
            };
            responses.insert("403".into(), refusal);
        }
    }
    paths
}

/// Adds the query-string refusals (`server::url::Query::check`) to every
/// operation's 400: every operation refuses a parameter it does not list,
/// a repeated one, and a bad percent-escape, next to its own 400 codes.
fn with_query_refusals(mut paths: Value) -> Value {
    const WHY: &str = "an unknown or repeated query parameter, or a bad percent-escape";
    const CODES: [&str; 2] = ["invalid_query", "invalid_encoding"];
    for methods in paths.as_object_mut().expect("paths").values_mut() {
        for op in methods.as_object_mut().expect("operations").values_mut() {
            let responses = op["responses"].as_object_mut().expect("responses");
            let refusal = match responses.get("400").and_then(|r| r["description"].as_str()) {
                Some(own) => {
                    let (text, codes) = own
                        .rsplit_once(" (code ")
                        .expect("400 descriptions end with their codes");
                    let mut codes: Vec<String> = codes.trim_end_matches(')').split(", ").map(str::to_owned).collect();
                    for c in CODES.map(|c| format!("`{c}`")) {
                        if !codes.contains(&c) {
                            codes.push(c);
                        }
                    }
                    json!({
                        "description": format!("{text}; or {WHY} (code {})", codes.join(", ")),
                        "content": { "application/json": { "schema": schema("Error") } },
                    })
                }
                None => {
                    let mut why = WHY.to_owned();
                    why[..1].make_ascii_uppercase();
                    error(&why, &CODES)
                }
            };
            responses.insert("400".into(), refusal);
        }
    }
    paths
}

fn document() -> Value {
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "prochub",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "A process hub: register long-running processes, push their output, follow it live. \
                Every error is JSON `{\"error\", \"code\"}`. `HEAD` works wherever `GET` does (but `/ws`): the same \
                status and headers, no body. `OPTIONS` on any known path answers 204 with `Allow` and never needs the \
                token; any other method is a 405 with `Allow`. Unknown paths are a 404 `not_found`. With `--token`, \
                every `/api`, `/ws` and `/metrics` request needs `Authorization: Bearer T` or `?access_token=T`. \
                Browser safety: a `Host` that is not this server is a 421 `misdirected_host`; an `Origin` that is \
                neither this server nor `--cors-origin` is a 403 `forbidden_origin` on every method but GET/HEAD/OPTIONS \
                and on `/ws`. Requests without `Origin` are unaffected. Query strings are strict, like bodies: a \
                parameter an operation does not list (but `access_token`, wherever the token applies) is a 400 \
                `invalid_query` naming it, and so is a parameter given twice.",
        },
        "servers": [{ "url": "/" }],
        "security": [{ "bearer": [] }, { "access_token": [] }],
        "tags": [
            { "name": "health" }, { "name": "workspaces" }, { "name": "processes" },
            { "name": "output" }, { "name": "events" }, { "name": "operations" },
        ],
        "paths": with_query_refusals(with_origin_refusals(paths())),
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "`--token` / `PROCHUB_TOKEN`" },
                "access_token": { "type": "apiKey", "in": "query", "name": "access_token", "description": "The token, for clients that cannot set headers (EventSource)" },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::router::{PATTERNS, Route};
    use std::collections::BTreeSet;

    use super::super::url::segments;
    use super::*;

    /// `/api/processes/:id` as a path that parses, and as the document's key.
    fn sample_and_key(pattern: &str) -> (String, String) {
        (pattern.replace(":id", "x"), pattern.replace(":id", "{id}"))
    }

    #[test]
    fn every_route_and_method_is_documented_and_nothing_else() {
        let doc = document();
        let paths = doc["paths"].as_object().expect("paths");
        let mut keys = Vec::new();
        for pattern in PATTERNS {
            let (sample, key) = sample_and_key(pattern);
            let route = Route::parse(&segments(&sample).expect("segments")).expect("a listed pattern parses");
            assert_eq!(route.pattern(), *pattern, "PATTERNS and Route::pattern disagree");
            let ops = paths
                .get(&key)
                .unwrap_or_else(|| panic!("{key} is not in the OpenAPI document"));
            for method in route.allow().split(", ") {
                // HEAD and OPTIONS are the same everywhere: the description says so.
                if method == "HEAD" || method == "OPTIONS" {
                    continue;
                }
                let op = ops
                    .get(method.to_ascii_lowercase())
                    .unwrap_or_else(|| panic!("{method} {key} is not in the OpenAPI document"));
                assert!(
                    op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                    "{method} {key}"
                );
            }
            let documented: Vec<&String> = ops.as_object().expect("operations").keys().collect();
            for m in documented {
                assert!(
                    route.allow().split(", ").any(|a| a.eq_ignore_ascii_case(m)),
                    "{m} {key} is documented but the router does not allow it"
                );
            }
            keys.push(key);
        }
        for key in paths.keys() {
            assert!(keys.contains(key), "{key} is documented but no route has it");
        }
    }

    /// The query parameters of every operation are exactly those the
    /// router lets through (`Route::params`), and every operation says it
    /// refuses the others.
    #[test]
    fn every_operation_documents_exactly_the_parameters_it_accepts() {
        let doc = document();
        for pattern in PATTERNS {
            let (sample, key) = sample_and_key(pattern);
            let route = Route::parse(&segments(&sample).expect("segments")).expect("a listed pattern parses");
            for method in route.allow().split(", ").filter(|m| !matches!(*m, "HEAD" | "OPTIONS")) {
                let op = &doc["paths"][&key][method.to_ascii_lowercase()];
                let documented: BTreeSet<&str> = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .map(|p| p["name"].as_str().expect("a name"))
                    .collect();
                let m = http::Method::from_bytes(method.as_bytes()).expect("a method");
                let params = route
                    .params(&m)
                    .unwrap_or_else(|| panic!("{method} {key} has no `Route::params`"));
                let accepted: BTreeSet<&str> = params.once.iter().chain(params.repeated).copied().collect();
                assert_eq!(documented, accepted, "{method} {key}");
                let refusal = op["responses"]["400"]["description"].as_str().unwrap_or_default();
                assert!(refusal.contains("`invalid_query`"), "{method} {key}: {refusal}");
            }
        }
    }

    /// The browser guard's answers are in the document wherever the guard
    /// gives them, so schemathesis accepts them and clients can expect them.
    #[test]
    fn the_host_and_origin_refusals_are_documented_where_they_apply() {
        let doc = document();
        for (path, ops) in doc["paths"].as_object().expect("paths") {
            for (method, op) in ops.as_object().expect("operations") {
                let responses = &op["responses"];
                let says = |status: &str, code: &str| {
                    responses[status]["description"]
                        .as_str()
                        .is_some_and(|d| d.contains(code))
                };
                assert!(says("421", "misdirected_host"), "{method} {path}");
                let guarded = method != "get" || path == "/ws";
                assert_eq!(says("403", "forbidden_origin"), guarded, "{method} {path}");
            }
        }
        let create = &doc["paths"]["/api/processes"]["post"]["responses"]["403"]["description"];
        assert!(create.as_str().unwrap().contains("exec_disabled"), "{create}");
    }

    #[test]
    fn every_reference_resolves() {
        let doc = document();
        let text = doc.to_string();
        for part in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().expect("a name");
            assert!(
                doc["components"]["schemas"].get(name).is_some(),
                "missing schema {name}"
            );
        }
    }
}
