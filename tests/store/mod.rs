//! Store tests: FileProcessStore on real temporary folders.

mod basics;
mod records;
