//! Locking that survives a panic elsewhere.

use std::sync::{Mutex, MutexGuard};

/// Locks `m`, ignoring poisoning. Every mutex in the crate guards plain
/// data that a panicking holder cannot leave half-valid in a way that
/// matters more than staying up; a poisoned lock must not turn one panic
/// into a panic on every later request.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
