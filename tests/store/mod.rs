//! Store tests: FileProcessStore on real temporary folders.

mod basics;
mod concurrency;
mod crash;
mod descriptors;
mod follow;
mod history;
mod lists;
mod records;
mod recovery;
mod retention;
mod sample;
mod workspaces;
