//! The process's descriptor limit: raised to its hard maximum at start
//! (as nginx's `worker_rlimit_nofile` and Go's runtime do), so the
//! connection cap rather than `EMFILE` is what refuses a flood.

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns it;
/// `None` where the platform has no such limit or it cannot be read.
pub fn raise_and_get() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read or raise the descriptor limit");
            rlimit::getrlimit(rlimit::Resource::NOFILE)
                .ok()
                .map(|(soft, _)| soft)
        }
    }
}
