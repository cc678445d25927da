//! Records, the status machine, validated ids, request bodies and patches,
//! lifecycle events, and the query shapes store and client share.
//!
//! Serde types only: nothing here touches the disk or the network, so every
//! other layer (store, server, client) can share these definitions.
//!
//! * [`id`]: [`Id`], the only way an id reaches a path.
//! * [`time`]: timestamps as stored, durations as shown.
//! * [`process`]: [`Process`], [`Status`] and its allowed moves, [`StatusInfo`].
//! * [`workspace`]: the [`Workspace`] record.
//! * [`request`]: create bodies and [`ProcessPatch`], applied in one place.
//! * [`event`]: [`LifecycleEvent`], [`StreamKind`].
//! * [`query`]: [`ListQuery`] (with its [`StatusSet`]), [`Page`], [`OutputRange`], [`OutputQuery`].
//! * [`server_info`]: [`ServerInfo`], the contents of `DIR/server.json`.

pub mod event;
pub mod id;
pub mod process;
pub mod query;
pub mod request;
pub mod server_info;
pub mod time;
pub mod workspace;

pub use event::{EventKind, LifecycleEvent, StreamKind};
pub use id::{Id, IdError};
pub use process::{Process, Status, StatusInfo};
pub use query::{ListQuery, OutputQuery, OutputRange, Page, StatusSet};
pub use request::{NewProcess, NewWorkspace, PatchError, ProcessPatch, merge_metadata, merge_patch};
pub use server_info::{SERVER_JSON, ServerInfo};
pub use time::{Timestamp, format_duration, format_ts, now, parse_duration, parse_when, ts};
pub use workspace::Workspace;

/// Longest id accepted for processes and workspaces (SPEC section 1).
pub const MAX_ID_LEN: usize = 64;
/// Longest process name, in characters.
pub const MAX_NAME_LEN: usize = 512;
/// Largest `metadata` object, measured as compact JSON.
pub const MAX_METADATA_BYTES: usize = 64 * 1024;
/// The workspace that always exists.
pub const DEFAULT_WORKSPACE: &str = "default";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

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
