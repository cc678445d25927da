//! Records, the status machine, ids and lifecycle events.
//!
//! Serde types only: nothing here touches the disk or the network, so every
//! other layer (store, server, client) can share these definitions.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// Longest id accepted for processes and workspaces (SPEC section 1).
pub const MAX_ID_LEN: usize = 64;
/// Longest process name, in characters.
pub const MAX_NAME_LEN: usize = 512;
/// Largest `metadata` object, measured as compact JSON.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// The workspace that always exists.
pub const DEFAULT_WORKSPACE: &str = "default";

/// Timestamps are written as RFC 3339 UTC with millisecond precision.
pub type Timestamp = DateTime<Utc>;

/// The current time, truncated to what we store (milliseconds), so a record
/// read back from disk equals the one kept in memory.
pub fn now() -> Timestamp {
    let t = Utc::now();
    DateTime::from_timestamp_millis(t.timestamp_millis()).expect("current time is representable")
}

/// serde helpers for [`Timestamp`] as RFC 3339 with milliseconds.
pub mod ts {
    use super::*;

    pub fn serialize<S: Serializer>(t: &Timestamp, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Timestamp, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }

    /// The same for `Option<Timestamp>` (null when absent).
    pub mod opt {
        use super::*;

        pub fn serialize<S: Serializer>(t: &Option<Timestamp>, s: S) -> Result<S::Ok, S::Error> {
            match t {
                Some(t) => super::serialize(t, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Timestamp>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(s) => DateTime::parse_from_rfc3339(&s)
                    .map(|t| Some(t.with_timezone(&Utc)))
                    .map_err(serde::de::Error::custom),
            }
        }
    }
}

/// Why an id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("id is empty")]
    Empty,
    #[error("id is longer than {MAX_ID_LEN} characters")]
    TooLong,
    #[error("id {0:?} may only contain A-Z, a-z, 0-9, '_' and '-'")]
    BadChar(String),
}

/// Checks an id against `[A-Za-z0-9_-]{1,64}`. Every id passes through here
/// before it is used to build a path, which is what keeps `../x`, `%2F` and
/// NUL out of the file system.
pub fn validate_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() {
        return Err(IdError::Empty);
    }
    if id.len() > MAX_ID_LEN {
        return Err(IdError::TooLong);
    }
    if !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
        let shown: String = id.chars().take(MAX_ID_LEN).collect();
        return Err(IdError::BadChar(shown));
    }
    Ok(())
}

/// The process-wide ULID generator: monotonic, so ids made within the same
/// millisecond still sort in creation order and never repeat. Guarded by a
/// std Mutex held only for the few nanoseconds of `generate`.
static ULID_GEN: Mutex<Option<ulid::Generator>> = Mutex::new(None);

/// A new server-made id: a ULID (time-sortable, unique across restarts
/// because its 80 random bits are drawn fresh in each process).
pub fn new_id() -> String {
    let mut guard = ULID_GEN.lock().unwrap_or_else(|e| e.into_inner());
    let generator = guard.get_or_insert_with(ulid::Generator::new);
    match generator.generate() {
        Ok(id) => id.to_string(),
        // Overflow of the random part within one millisecond (2^80 ids):
        // fall back to a fresh random ULID, still unique.
        Err(_) => ulid::Ulid::new().to_string(),
    }
}

/// Life stage of a process. Allowed moves: `queued→running`,
/// `queued→cancelled`, `running→completed|failed|cancelled`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    #[default]
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 5] = [
        Status::Queued,
        Status::Running,
        Status::Completed,
        Status::Failed,
        Status::Cancelled,
    ];

    /// A terminal status never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Failed | Status::Cancelled)
    }

    /// Whether `self → next` is an allowed move. Staying put is allowed (a
    /// no-op) unless the status is terminal and `next` differs.
    pub fn can_move_to(self, next: Status) -> bool {
        use Status::*;
        self == next
            || matches!(
                (self, next),
                (Queued, Running) | (Queued, Cancelled) | (Running, Completed | Failed | Cancelled)
            )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Completed => "completed",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| format!("unknown status {s:?} (expected queued, running, completed, failed or cancelled)"))
    }
}

/// A process record, exactly as stored in `processes/<id>.json` and served
/// by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Process {
    pub id: String,
    pub workspace: String,
    pub name: String,
    pub status: Status,
    #[serde(with = "ts")]
    pub created_at: Timestamp,
    #[serde(with = "ts")]
    pub updated_at: Timestamp,
    #[serde(with = "ts::opt", default)]
    pub started_at: Option<Timestamp>,
    #[serde(with = "ts::opt", default)]
    pub ended_at: Option<Timestamp>,
    #[serde(default)]
    pub duration: Option<String>,
    #[serde(default)]
    pub result: Option<Value>,
    #[serde(default)]
    pub error: Option<String>,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(default)]
    pub command: Option<Vec<String>>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    /// Bytes of output stored in `output/<id>.log`. On disk this may lag
    /// behind the log; the store derives it from the log's length at open.
    #[serde(default)]
    pub output_bytes: u64,
    /// True once output went past the per-process cap and stopped being
    /// stored (it still streams live).
    #[serde(default)]
    pub output_truncated: bool,
}

impl Process {
    /// Milliseconds between `started_at` (or `created_at`) and `ended_at`.
    pub fn duration_ms(&self) -> Option<u64> {
        let end = self.ended_at?;
        let start = self.started_at.unwrap_or(self.created_at);
        Some((end - start).num_milliseconds().max(0) as u64)
    }

    /// The final `status` event payload of SPEC section 3.
    pub fn status_info(&self) -> StatusInfo {
        StatusInfo {
            status: self.status,
            duration: self.duration.clone(),
            duration_ms: self.duration_ms(),
            result: self.result.clone().unwrap_or(Value::Null),
            error: self.error.clone(),
            exit_code: self.exit_code,
        }
    }
}

/// Formats a duration the way records show it: humantime, whole
/// milliseconds at most (`2m 34s`, `1s 250ms`).
pub fn format_duration(ms: u64) -> String {
    humantime::format_duration(Duration::from_millis(ms)).to_string()
}

/// Payload of the `status` event that ends a follow stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusInfo {
    pub status: Status,
    pub duration: Option<String>,
    pub duration_ms: Option<u64>,
    pub result: Value,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
}

/// A workspace record, `workspaces/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workspace {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub root_path: Option<String>,
    #[serde(with = "ts")]
    pub created_at: Timestamp,
}

/// Body of `POST /api/workspaces`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewWorkspace {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_path: Option<String>,
}

/// Body of `POST /api/processes`. Unknown fields are refused so that a typo
/// is a 400, not a silently ignored field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewProcess {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Map<String, Value>>,
    /// Server-run command (SPEC section 6); needs `--allow-exec`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Working directory of a server-run command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Extra environment of a server-run command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// Deserializes a present field (even `null`) as `Some`, so a merge patch
/// can tell "absent" (leave alone) from "null" (clear).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// Body of `PATCH /api/processes/:id`: a JSON merge patch (RFC 7396) of the
/// editable fields. `metadata` merges key by key (`null` deletes a key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessPatch {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `Some(Value::Null)` clears the result.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// `Some(None)` clears the error.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub error: Option<Option<String>>,
    /// Merged into the stored metadata; `Some(Value::Null)` clears it.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<Option<i32>>,
}

impl ProcessPatch {
    pub fn status(status: Status) -> Self {
        ProcessPatch {
            status: Some(status),
            ..Default::default()
        }
    }
}

/// RFC 7396 JSON merge patch of `patch` into `target`.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("just made an object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// Percent-encodes a query value: everything but RFC 3986's unreserved
/// characters. Shared by the server (`Link` headers) and the client (query
/// strings), so a cursor or workspace id survives the round trip.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Which pipe a chunk of a server-run command came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamKind {
    Stdout,
    Stderr,
}

/// Kind of a lifecycle event (SPEC section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    ProcessAdded,
    ProcessUpdated,
    ProcessRemoved,
    WorkspaceAdded,
    WorkspaceRemoved,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::ProcessAdded => "process-added",
            EventKind::ProcessUpdated => "process-updated",
            EventKind::ProcessRemoved => "process-removed",
            EventKind::WorkspaceAdded => "workspace-added",
            EventKind::WorkspaceRemoved => "workspace-removed",
        }
    }
}

/// A lifecycle event as sent over `/ws` and `/api/events`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LifecycleEvent {
    #[serde(rename = "type")]
    pub kind: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<Process>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<Workspace>,
    #[serde(with = "ts")]
    pub timestamp: Timestamp,
}

impl LifecycleEvent {
    /// The workspace this event belongs to (for `?workspace=` filters).
    pub fn workspace_id(&self) -> &str {
        match (&self.process, &self.workspace) {
            (Some(p), _) => &p.workspace,
            (None, Some(w)) => &w.id,
            (None, None) => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(validate_id("abc_DEF-123").is_ok());
        for bad in ["", "../x", "a/b", "%2F", "a\0b", "é", &"a".repeat(65)] {
            assert!(validate_id(bad).is_err(), "{bad:?} must be refused");
        }
        assert!(validate_id(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn new_ids_sort_in_creation_order_and_are_valid() {
        let ids: Vec<String> = (0..1000).map(|_| new_id()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted);
        ids.iter().for_each(|id| validate_id(id).expect("valid"));
    }

    #[test]
    fn status_machine() {
        use Status::*;
        assert!(Queued.can_move_to(Running));
        assert!(Queued.can_move_to(Cancelled));
        assert!(!Queued.can_move_to(Completed));
        assert!(Running.can_move_to(Failed));
        assert!(!Running.can_move_to(Queued));
        for t in [Completed, Failed, Cancelled] {
            for n in Status::ALL {
                assert_eq!(t.can_move_to(n), n == t);
            }
        }
    }

    #[test]
    fn patch_tells_absent_from_null() {
        let p: ProcessPatch = serde_json::from_str(r#"{"result":null,"error":null}"#).unwrap();
        assert_eq!(p.result, Some(Value::Null));
        assert_eq!(p.error, Some(None));
        let p: ProcessPatch = serde_json::from_str("{}").unwrap();
        assert_eq!(p.result, None);
        assert!(serde_json::from_str::<ProcessPatch>(r#"{"nmae":"x"}"#).is_err());
    }

    #[test]
    fn merge_patch_follows_rfc7396() {
        let mut t = serde_json::json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut t, &serde_json::json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(t, serde_json::json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }

    #[test]
    fn durations_read_like_humans_write_them() {
        assert_eq!(format_duration(154_000), "2m 34s");
    }
}
