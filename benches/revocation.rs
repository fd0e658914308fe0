//! The revocation check on the request path (src/revocation/list.rs) and
//! the cost of a write at the list's bound. What each guards is written in
//! benches/README.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use smh_gateway::revocation::{Revocation, RevocationList, DEFAULT_MAX_REVOCATIONS};

const NOW: u64 = 1_700_000_000;

fn entry(user: &str) -> Revocation {
    let mut r = Revocation::new(user, 3600, "admin", "bench");
    r.revoked_at = NOW;
    r.expires_at = NOW + 3600;
    r
}

/// A list of `n` entries, one user each (the worst spread for the copy on
/// write), plus three entries for `u-busy`.
fn full_list(n: usize, max: usize) -> RevocationList {
    let list = RevocationList::with_max(max);
    let mut batch: Vec<Revocation> = (0..n).map(|i| entry(&format!("user-{i}"))).collect();
    batch.push(entry("u-busy").device("phone"));
    batch.push(entry("u-busy").device("tablet"));
    batch.push(entry("u-busy").device("laptop").session("s-old"));
    list.insert_many(batch, NOW);
    list
}

fn check(c: &mut Criterion) {
    let empty = RevocationList::new();
    c.bench_function("revocation_check_empty", |b| {
        b.iter(|| {
            empty.is_revoked(
                black_box("u-1234"),
                Some(black_box("phone")),
                Some(black_box("s-1")),
                Some(NOW + 10),
                NOW + 20,
            )
        })
    });
    let full = full_list(DEFAULT_MAX_REVOCATIONS - 3, DEFAULT_MAX_REVOCATIONS);
    c.bench_function("revocation_check_full_other_user", |b| {
        b.iter(|| {
            full.is_revoked(
                black_box("u-1234"),
                Some(black_box("phone")),
                Some(black_box("s-1")),
                Some(NOW + 10),
                NOW + 20,
            )
        })
    });
    // A user with three entries and a session issued after them: every
    // entry is looked at and none matches.
    c.bench_function("revocation_check_full_revoked_user_new_session", |b| {
        b.iter(|| {
            full.is_revoked(
                black_box("u-busy"),
                Some(black_box("laptop")),
                Some(black_box("s-new")),
                Some(NOW + 10),
                NOW + 20,
            )
        })
    });
}

fn insert(c: &mut Criterion) {
    // Near the default bound, with room for the iterations to add theirs.
    let list = full_list(DEFAULT_MAX_REVOCATIONS - 3, 10 * DEFAULT_MAX_REVOCATIONS);
    let mut i = 0u64;
    c.bench_function("revocation_insert_at_bound", |b| {
        b.iter(|| {
            i += 1;
            list.insert(entry(&format!("new-{i}")), NOW).unwrap()
        })
    });
}

criterion_group!(benches, check, insert);
criterion_main!(benches);
