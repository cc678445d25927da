//! Validated ids of processes and workspaces: parse, don't validate.
//!
//! An [`Id`] can only be made by [`Id::parse`] (or deserialized, which
//! parses), so a value of this type always matches `[A-Za-z0-9_-]{1,64}`.
//! That is what keeps `../x`, `%2F` and NUL out of every path the store
//! builds from an id: past the edge where text becomes an `Id`, an invalid
//! id cannot be represented.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Deserializer, Serialize};

use super::MAX_ID_LEN;

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

/// An id of a process or workspace, checked against `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Id(String);

impl Id {
    /// Checks `id` and wraps it.
    pub fn parse(id: &str) -> Result<Id, IdError> {
        check(id)?;
        Ok(Id(id.to_owned()))
    }

    /// The same for an owned string, without a copy.
    pub fn from_string(id: String) -> Result<Id, IdError> {
        check(&id)?;
        Ok(Id(id))
    }

    /// A new server-made id: a ULID (time-sortable, unique across restarts
    /// because its 80 random bits are drawn fresh in each process).
    pub fn generate() -> Id {
        let mut guard = crate::sync::lock(&ULID_GEN);
        let generator = guard.get_or_insert_with(ulid::Generator::new);
        let id = match generator.generate() {
            Ok(id) => id.to_string(),
            // Overflow of the random part within one millisecond (2^80 ids):
            // fall back to a fresh random ULID, still unique.
            Err(_) => ulid::Ulid::new().to_string(),
        };
        Id(id)
    }

    /// The workspace that always exists.
    pub fn default_workspace() -> Id {
        Id(super::DEFAULT_WORKSPACE.to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

/// `[A-Za-z0-9_-]{1,64}`.
fn check(id: &str) -> Result<(), IdError> {
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

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Id, D::Error> {
        Id::from_string(String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

impl Deref for Id {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Id {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for Id {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Id {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Id, IdError> {
        Id::parse(s)
    }
}

impl TryFrom<&str> for Id {
    type Error = IdError;
    fn try_from(s: &str) -> Result<Id, IdError> {
        Id::parse(s)
    }
}

impl TryFrom<String> for Id {
    type Error = IdError;
    fn try_from(s: String) -> Result<Id, IdError> {
        Id::from_string(s)
    }
}

impl From<Id> for String {
    fn from(id: Id) -> String {
        id.0
    }
}

impl PartialEq<str> for Id {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Id {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl PartialEq<String> for Id {
    fn eq(&self, other: &String) -> bool {
        &self.0 == other
    }
}

impl PartialEq<Id> for str {
    fn eq(&self, other: &Id) -> bool {
        self == other.0
    }
}

impl PartialEq<Id> for &str {
    fn eq(&self, other: &Id) -> bool {
        *self == other.0
    }
}

impl PartialEq<Id> for String {
    fn eq(&self, other: &Id) -> bool {
        *self == other.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked() {
        assert!(Id::parse("abc_DEF-123").is_ok());
        for bad in ["", "../x", "a/b", "%2F", "a\0b", "é", &"a".repeat(65)] {
            assert!(Id::parse(bad).is_err(), "{bad:?} must be refused");
            assert!(serde_json::from_value::<Id>(serde_json::json!(bad)).is_err());
        }
        assert!(Id::parse(&"a".repeat(64)).is_ok());
    }

    #[test]
    fn new_ids_sort_in_creation_order_and_are_valid() {
        let ids: Vec<Id> = (0..1000).map(|_| Id::generate()).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(ids, sorted);
        ids.iter().for_each(|id| assert!(Id::parse(id).is_ok()));
    }
}
