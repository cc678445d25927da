//! Locking std mutexes without poisoning.
//!
//! A std `Mutex` is poisoned when a thread panics while holding it. Every
//! critical section in prochub is short and leaves the guarded state valid
//! at each step (counters, maps of handles, caches that are rebuilt from
//! disk), so a panic elsewhere is no reason to stop serving: these helpers
//! take the guard either way. They are the one place that decision lives.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// `m.lock()`, recovering the guard of a poisoned mutex.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `l.read()`, recovering from poison.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

/// `l.write()`, recovering from poison.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}

/// `Condvar::wait`, recovering from poison.
pub fn wait<'a, T>(c: &std::sync::Condvar, g: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    c.wait(g).unwrap_or_else(|e| e.into_inner())
}
