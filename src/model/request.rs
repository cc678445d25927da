//! Request bodies: what a client sends to create or change a record, and
//! the one place a merge patch is applied.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use super::{Process, Status};

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
    /// Extra environment of a server-run command. Checked as it is read
    /// ([`env_entry_error`]): a bad key is a 400 naming it, before anything
    /// is stored.
    #[serde(default, deserialize_with = "env", skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "exit_code", skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

/// Why an entry of a command's `env` cannot reach `execve`, if it cannot:
/// an empty key, a key with `=` (the entry would set another variable, or
/// none), or a NUL in the key or value (C strings end there).
/// Regression: such entries were stored, then the spawn failed or set a
/// different variable than the one asked for.
fn env_entry_error(key: &str, value: &str) -> Option<String> {
    if key.is_empty() {
        Some("`env` has an empty variable name".to_owned())
    } else if key.contains('=') {
        Some(format!("`env` variable name {key:?} contains `=`"))
    } else if key.contains('\0') {
        Some(format!("`env` variable name {key:?} contains NUL"))
    } else if value.contains('\0') {
        Some(format!("the value of `env` variable {key:?} contains NUL"))
    } else {
        None
    }
}

/// `env`, refusing what [`env_entry_error`] refuses.
fn env<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    let env = Option::<BTreeMap<String, String>>::deserialize(d)?;
    if let Some(message) = env.iter().flatten().find_map(|(k, v)| env_entry_error(k, v)) {
        return Err(serde::de::Error::custom(message));
    }
    Ok(env)
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

/// An exit code: any JSON number with an integral value in `i32` range, so
/// `3.0` is `3` (JSON Schema's `integer`, which the OpenAPI document
/// promises; regression found by schemathesis: `3.0` was a 400), or null.
fn exit_code<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i32>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = match (n.as_i64(), n.as_f64()) {
        (Some(i), _) => Some(i),
        (None, Some(f)) if f.fract() == 0.0 && f.abs() <= i32::MAX as f64 + 1.0 => Some(f as i64),
        _ => None,
    };
    whole
        .and_then(|i| i32::try_from(i).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("exit_code must be a whole number in i32 range, got {n}")))
}

/// [`exit_code`] for a patch, where a present `null` clears the field.
fn present_exit_code<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i32>>, D::Error> {
    exit_code(d).map(Some)
}

/// Body of `PATCH /api/processes/:id`: a JSON merge patch (RFC 7396) of the
/// editable fields. `metadata` merges key by key (`null` deletes a key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessPatch {
    /// `null` is a 400: a merge patch's null removes a member, and a record
    /// keeps its name and status. Regression (found by schemathesis): null
    /// was taken as "absent" and the patch succeeded.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
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
    #[serde(
        default,
        deserialize_with = "present_exit_code",
        skip_serializing_if = "Option::is_none"
    )]
    pub exit_code: Option<Option<i32>>,
    /// The signal that killed a server-run command (`"SIGKILL"`), set by
    /// the runner when it records the end; `None` leaves the record's
    /// alone. Not part of the PATCH body: like `command`, only the server
    /// knows it (a client sending it gets the usual unknown-field 400).
    #[serde(skip)]
    pub exit_signal: Option<String>,
}

impl ProcessPatch {
    pub fn status(status: Status) -> Self {
        ProcessPatch {
            status: Some(status),
            ..Default::default()
        }
    }
}

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatchError {
    #[error("metadata must be an object")]
    MetadataNotObject,
}

/// The plain fields a patch edits, borrowed from a stored record or from a
/// create that has not been sent yet: one place applies them to both.
struct Editable<'a> {
    name: &'a mut String,
    result: &'a mut Option<Value>,
    error: &'a mut Option<String>,
    exit_code: &'a mut Option<i32>,
}

impl ProcessPatch {
    fn apply_fields(&self, f: Editable<'_>) {
        if let Some(name) = &self.name {
            *f.name = name.clone();
        }
        if let Some(result) = &self.result {
            *f.result = (!result.is_null()).then(|| result.clone());
        }
        if let Some(error) = &self.error {
            *f.error = error.clone();
        }
        if let Some(code) = self.exit_code {
            *f.exit_code = code;
        }
    }

    /// Applies every editable field but `status` to a stored record; the
    /// status move is the store's to check and stamp.
    pub fn apply(&self, p: &mut Process) -> Result<(), PatchError> {
        self.apply_fields(Editable {
            name: &mut p.name,
            result: &mut p.result,
            error: &mut p.error,
            exit_code: &mut p.exit_code,
        });
        if let Some(signal) = &self.exit_signal {
            p.exit_signal = Some(signal.clone());
        }
        if let Some(m) = &self.metadata {
            merge_metadata(&mut p.metadata, m)?;
        }
        Ok(())
    }

    /// Applies the patch, status included, to a create that has not been
    /// sent yet (the client's offline queue folds updates into it).
    /// `exit_signal` is not here: a create has no such field, and only the
    /// runner (never a client's queued patch) sets one.
    pub fn apply_to_new(&self, p: &mut NewProcess) -> Result<(), PatchError> {
        if let Some(s) = self.status {
            p.status = Some(s);
        }
        self.apply_fields(Editable {
            name: &mut p.name,
            result: &mut p.result,
            error: &mut p.error,
            exit_code: &mut p.exit_code,
        });
        if let Some(m) = &self.metadata {
            merge_metadata(p.metadata.get_or_insert_with(Map::new), m)?;
        }
        Ok(())
    }
}

/// Merges `patch` into a metadata object (RFC 7396). `null` removes the
/// member, which for the record's always-object metadata means it becomes
/// empty (regression: it was a 400 "must be an object").
pub fn merge_metadata(metadata: &mut Map<String, Value>, patch: &Value) -> Result<(), PatchError> {
    if patch.is_null() {
        metadata.clear();
        return Ok(());
    }
    let mut merged = Value::Object(std::mem::take(metadata));
    merge_patch(&mut merged, patch);
    match merged {
        Value::Object(map) => {
            *metadata = map;
            Ok(())
        }
        _ => Err(PatchError::MetadataNotObject),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bug_a_null_name_or_status_in_a_patch_was_taken_as_absent() {
        for body in [r#"{"name":null}"#, r#"{"status":null}"#] {
            assert!(serde_json::from_str::<ProcessPatch>(body).is_err(), "{body}");
        }
        let p: ProcessPatch = serde_json::from_str(r#"{"name":"n","status":"failed"}"#).expect("valid");
        assert_eq!((p.name.as_deref(), p.status), (Some("n"), Some(Status::Failed)));
    }

    #[test]
    fn bug_an_integral_float_exit_code_was_refused() {
        let p: ProcessPatch = serde_json::from_str(r#"{"exit_code":3.0}"#).expect("3.0 is 3");
        assert_eq!(p.exit_code, Some(Some(3)));
        let p: ProcessPatch = serde_json::from_str(r#"{"exit_code":null}"#).expect("null clears");
        assert_eq!(p.exit_code, Some(None));
        let p: ProcessPatch = serde_json::from_str("{}").expect("absent");
        assert_eq!(p.exit_code, None);
        let n: NewProcess = serde_json::from_str(r#"{"name":"x","exit_code":-2147483648}"#).expect("i32::MIN");
        assert_eq!(n.exit_code, Some(i32::MIN));
        for bad in ["3.5", "2147483648", "1e300", "\"3\""] {
            let body = format!(r#"{{"name":"x","exit_code":{bad}}}"#);
            assert!(serde_json::from_str::<NewProcess>(&body).is_err(), "{bad}");
        }
    }

    #[test]
    fn bug_env_keys_with_equals_or_nul_or_empty_were_accepted() {
        let parse = |env: &str| serde_json::from_str::<NewProcess>(&format!(r#"{{"name":"x","env":{env}}}"#));
        for (env, names) in [
            (r#"{"":"v"}"#, "empty"),
            (r#"{"A=B":"v"}"#, "\"A=B\""),
            (r#"{"A\u0000B":"v"}"#, "NUL"),
            (r#"{"OK":"v\u0000w"}"#, "\"OK\""),
        ] {
            let err = parse(env).expect_err(env).to_string();
            assert!(err.contains(names), "{env}: {err}");
        }
        let ok = parse(r#"{"PATH_2":"a=b","LANG":""}"#).expect("valid env");
        assert_eq!(ok.env.expect("env").len(), 2);
        assert_eq!(parse("null").expect("null is absent").env, None);
    }
}
