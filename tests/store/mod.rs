//! Store tests: FileProcessStore on real temporary folders.

mod basics;
mod crash;
mod follow;
mod records;
mod recovery;
mod retention;
mod sample;
mod workspaces;
