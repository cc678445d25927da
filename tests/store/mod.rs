//! Store tests: FileProcessStore on real temporary folders.

mod basics;
mod follow;
mod records;
mod recovery;
mod retention;
