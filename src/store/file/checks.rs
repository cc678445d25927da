//! The rules a record's fields must meet before it is written (SPEC
//! section 1), shared by process and workspace records: one wording and
//! one `field` per rule, whichever request broke it.

use serde_json::{Map, Value};

use super::error::{Result, StoreError};
use crate::model::{MAX_METADATA_BYTES, MAX_NAME_LEN, PatchError};

/// A name is not blank and at most [`MAX_NAME_LEN`] characters.
pub(super) fn name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(StoreError::invalid("name", "must not be empty"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(StoreError::invalid(
            "name",
            format!("must be at most {MAX_NAME_LEN} characters"),
        ));
    }
    Ok(())
}

/// Metadata is at most [`MAX_METADATA_BYTES`] as compact JSON.
pub(super) fn metadata(m: &Map<String, Value>) -> Result<()> {
    let size = serde_json::to_vec(m).map_or(usize::MAX, |v| v.len());
    if size > MAX_METADATA_BYTES {
        return Err(StoreError::invalid(
            "metadata",
            format!("is {size} bytes as JSON; at most {MAX_METADATA_BYTES} are allowed"),
        ));
    }
    Ok(())
}

/// A command, when given, names a program.
pub(super) fn command(command: Option<&[String]>) -> Result<()> {
    match command {
        Some(cmd) if cmd.first().is_none_or(|c| c.is_empty()) => {
            Err(StoreError::invalid("command", "must name a program"))
        }
        _ => Ok(()),
    }
}

/// A patch that could not be applied, as the field it broke.
pub(super) fn patch_error(e: PatchError) -> StoreError {
    match e {
        PatchError::MetadataNotObject => StoreError::invalid("metadata", "must be an object"),
    }
}
