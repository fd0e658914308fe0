//! The replicator against a real `redis-server` (started per test on a
//! free port; see `test_support`). Every wait is on an event (a callback,
//! a state or counter change) with a bound, never a fixed sleep.

use super::test_support::{RedisOptions, RedisServer};
use super::*;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Bound on any one wait. Events here take milliseconds; reconnects take at
/// most BACKOFF_MAX; reaching this means the event will not come.
const WAIT: Duration = Duration::from_secs(30);

struct Node {
    list: Arc<RevocationList>,
    rep: Replicator,
    applied: mpsc::UnboundedReceiver<(Revocation, AppliedInfo)>,
}

fn node(url: &str, id: &str) -> Node {
    node_with(url, id, None)
}

fn node_with(url: &str, id: &str, root_ca_pem: Option<Vec<u8>>) -> Node {
    let mut config = ReplicatorConfig::new(url, id);
    config.root_ca_pem = root_ca_pem;
    node_config(config)
}

fn node_config(config: ReplicatorConfig) -> Node {
    let list = Arc::new(RevocationList::new());
    let (tx, applied) = mpsc::unbounded_channel();
    let rep = Replicator::start(
        config,
        list.clone(),
        Arc::new(move |r: &Revocation, i: &AppliedInfo| {
            let _ = tx.send((r.clone(), *i));
        }),
    )
    .expect("start the replicator");
    Node { list, rep, applied }
}

async fn wait_until(rep: &Replicator, what: &str, cond: impl Fn(&Replicator) -> bool) {
    let mut changes = rep.changes();
    let waited = tokio::time::timeout(WAIT, async {
        while !cond(rep) {
            changes.changed().await.expect("replicator task alive");
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "{} never got to: {what}; stats {:?}, last error {:?}",
        rep.replica_id(),
        rep.stats(),
        rep.last_error()
    );
}

async fn connected(rep: &Replicator) {
    wait_until(rep, "connected", |r| {
        matches!(r.state(), RedisState::Connected { .. })
    })
    .await;
}

async fn next_applied(n: &mut Node) -> (Revocation, AppliedInfo) {
    tokio::time::timeout(WAIT, n.applied.recv())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{}: nothing applied within {WAIT:?}; stats {:?}, last error {:?}",
                n.rep.replica_id(),
                n.rep.stats(),
                n.rep.last_error()
            )
        })
        .expect("callback sender alive")
}

fn revocation(user: &str, origin: &str) -> Revocation {
    Revocation::new(user, 3600, "admin", origin)
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .expect("raw connection to the test Redis")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_replica_reaches_the_others_and_later_ones() {
    let redis = RedisServer::start();
    let mut a = node(&redis.url(), "a");
    let mut b = node(&redis.url(), "b");
    connected(&a.rep).await;
    connected(&b.rep).await;

    let rev = revocation("u1", "a").device("phone").reason("lost phone");
    let now = unix_now();
    assert_eq!(a.rep.revoke(rev.clone(), now), Ok(true));
    assert!(a
        .list
        .is_revoked("u1", Some("phone"), None, Some(rev.revoked_at), now));

    let (got, info) = next_applied(&mut b).await;
    assert_eq!(got, rev);
    assert_eq!(info.from, AppliedFrom::Message);
    assert!(info.lag_ms.is_some());
    assert!(b
        .list
        .is_revoked("u1", Some("phone"), Some("s1"), Some(rev.revoked_at), now));
    assert!(!b
        .list
        .is_revoked("u1", Some("laptop"), Some("s1"), Some(rev.revoked_at), now));
    assert_eq!(b.rep.stats().applied, 1);
    assert!(b.rep.stats().last_lag_ms.is_some());

    // A's own message comes back to it, and changes nothing there.
    wait_until(&a.rep, "its own message read back", |r| {
        r.stats().received >= 1
    })
    .await;
    assert_eq!(a.rep.stats().applied, 0);
    assert!(
        a.applied.try_recv().is_err(),
        "no callback for A's own entry"
    );
    wait_until(&a.rep, "written", |r| r.pending() == 0).await;
    assert_eq!(a.rep.stats().written, 1);

    // The store: one key per revocation, expiring with the entry.
    let mut conn = raw(&redis.url()).await;
    let key = format!("{KEY_PREFIX}{}", rev.id);
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0 && ttl <= 3600, "ttl {ttl}");
    let stored: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(serde_json::from_str::<Revocation>(&stored).unwrap(), rev);

    // A replica started later loads it from the store.
    let mut c = node(&redis.url(), "c");
    let (got, info) = next_applied(&mut c).await;
    assert_eq!(got, rev);
    assert_eq!(info.from, AppliedFrom::Reload);
    connected(&c.rep).await;
    assert!(c
        .list
        .is_revoked("u1", Some("phone"), None, Some(rev.revoked_at), unix_now()));
    assert_eq!(c.rep.stats().applied, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_queues_locally_and_everything_catches_up_when_it_returns() {
    let mut redis = RedisServer::start();
    let a = node(&redis.url(), "a");
    let mut b = node(&redis.url(), "b");
    connected(&a.rep).await;
    connected(&b.rep).await;
    let before = revocation("u-before", "a");
    a.rep.revoke(before.clone(), unix_now()).unwrap();
    assert_eq!(next_applied(&mut b).await.0, before);
    // B may see the message before A has the answer to its write; a kill
    // in between would (rightly) leave `before` queued on A.
    wait_until(&a.rep, "written", |r| r.pending() == 0).await;

    redis.kill();
    for n in [&a, &b] {
        wait_until(&n.rep, "degraded", |r| {
            matches!(r.state(), RedisState::Degraded { .. })
        })
        .await;
    }
    let during = revocation("u-during", "a").session("s1");
    let now = unix_now();
    assert_eq!(a.rep.revoke(during.clone(), now), Ok(true));
    assert_eq!(a.rep.pending(), 1);
    assert!(matches!(a.rep.state(), RedisState::Degraded { .. }));
    assert!(a.rep.last_error().is_some());
    // Still answered locally, at once.
    assert!(a
        .list
        .is_revoked("u-during", None, Some("s1"), Some(now), now));
    assert!(!b
        .list
        .is_revoked("u-during", None, Some("s1"), Some(now), now));
    assert!(b.list.is_revoked("u-before", None, None, None, now));

    redis.restart();
    // B gets it (by message, or by its reload, whichever comes first).
    let (got, _) = next_applied(&mut b).await;
    assert_eq!(got, during);
    assert!(b
        .list
        .is_revoked("u-during", Some("any"), Some("s1"), Some(now), unix_now()));
    connected(&a.rep).await;
    wait_until(&a.rep, "flushed", |r| r.pending() == 0).await;
    connected(&b.rep).await;
    assert!(a.rep.stats().reconnects >= 1);
    assert!(a.rep.stats().last_sync_unix.is_some());
    assert_eq!(a.rep.last_error(), None);

    // The restarted Redis was empty; the replicas gave it back what they
    // hold, so a replica started now has both.
    let mut c = node(&redis.url(), "c");
    let mut ids = HashSet::new();
    ids.insert(next_applied(&mut c).await.0.id);
    ids.insert(next_applied(&mut c).await.0.id);
    assert_eq!(ids, HashSet::from([before.id.clone(), during.id.clone()]));
    assert_eq!(b.rep.stats().applied, 2, "each entry applied once on B");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_unusable_entries_are_not_loaded() {
    let redis = RedisServer::start();
    let mut conn = raw(&redis.url()).await;
    let now = unix_now();
    let mut expired = revocation("u-old", "x");
    expired.revoked_at = now - 7200;
    expired.expires_at = now - 10;
    let live = revocation("u-live", "x");
    let mut wrong_key = revocation("u-elsewhere", "x");
    wrong_key.id = "someotherid".into();
    // Written without a TTL, as another tool or a clock could leave them.
    for (key, value) in [
        (
            format!("{KEY_PREFIX}{}", expired.id),
            serde_json::to_string(&expired).unwrap(),
        ),
        (
            format!("{KEY_PREFIX}{}", live.id),
            serde_json::to_string(&live).unwrap(),
        ),
        (format!("{KEY_PREFIX}garbage"), "not json".to_owned()),
        (
            format!("{KEY_PREFIX}big"),
            format!("{{\"pad\":\"{}\"}}", "x".repeat(3 * MAX_MESSAGE_BYTES)),
        ),
        (
            format!("{KEY_PREFIX}{}", "k".repeat(MAX_ID_BYTES + 1)),
            "{}".to_owned(),
        ),
        (
            format!("{KEY_PREFIX}mismatch"),
            serde_json::to_string(&wrong_key).unwrap(),
        ),
    ] {
        let () = redis::cmd("SET")
            .arg(key)
            .arg(value)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let mut a = node(&redis.url(), "a");
    connected(&a.rep).await;
    assert_eq!(next_applied(&mut a).await.0, live);
    assert_eq!(a.list.len(), 1);
    assert!(!a.list.contains(&expired.id));
    assert!(!a.list.is_revoked("u-old", None, None, None, unix_now()));
    assert_eq!(
        a.rep.stats().refused,
        4,
        "garbage, mismatch, oversized value, overlong key"
    );

    // Garbage on the channel is counted and ignored; the replica goes on.
    let before = a.rep.stats().received;
    let () = redis::cmd("PUBLISH")
        .arg(CHANNEL)
        .arg("{\"nonsense\":1}")
        .query_async(&mut conn)
        .await
        .unwrap();
    wait_until(&a.rep, "garbage read", |r| r.stats().received > before).await;
    assert_eq!(a.rep.stats().refused, 5);
    assert!(matches!(a.rep.state(), RedisState::Connected { .. }));

    // An entry that expires while queued is not written.
    let mut short = revocation("u-short", "a");
    short.revoked_at = now - 100;
    short.expires_at = now - 1;
    a.rep.publish(short.clone()).unwrap();
    wait_until(&a.rep, "queue drained", |r| r.pending() == 0).await;
    let exists: bool = redis::cmd("EXISTS")
        .arg(format!("{KEY_PREFIX}{}", short.id))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!exists);
    assert_eq!(a.rep.stats().written, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_with_the_password_in_the_url() {
    let password = "s3cret-Pa55";
    let redis = RedisServer::start_with(RedisOptions {
        password: Some(password.into()),
        ..RedisOptions::default()
    });
    let a = node(&redis.url(), "a");
    let mut b = node(&redis.url(), "b");
    connected(&a.rep).await;
    connected(&b.rep).await;
    let rev = revocation("u1", "a");
    a.rep.revoke(rev.clone(), unix_now()).unwrap();
    assert_eq!(next_applied(&mut b).await.0, rev);

    let wrong = node(&redis.url_with_password("wrong-Pa55"), "w");
    wait_until(&wrong.rep, "a failed attempt", |r| r.last_error().is_some()).await;
    let err = wrong.rep.last_error().unwrap();
    assert!(
        err.to_lowercase().contains("authentication failed"),
        "a clear error: {err}"
    );
    assert!(!err.contains("wrong-Pa55"), "{err}");
    assert!(!format!("{:?}", wrong.rep).contains("wrong-Pa55"));
    assert!(matches!(wrong.rep.state(), RedisState::Connecting { .. }));
    assert!(wrong.list.is_empty());

    let none = node(&format!("redis://127.0.0.1:{}/", redis.port()), "n");
    wait_until(&none.rep, "a failed attempt", |r| r.last_error().is_some()).await;
    let err = none.rep.last_error().unwrap();
    assert!(err.contains("NOAUTH"), "a clear error: {err}");
    assert!(matches!(none.rep.state(), RedisState::Connecting { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_revocation_twice_applies_once() {
    let redis = RedisServer::start();
    let mut a = node(&redis.url(), "a");
    let mut b = node(&redis.url(), "b");
    connected(&a.rep).await;
    connected(&b.rep).await;
    let x = revocation("u1", "a");
    let y = revocation("u2", "a");
    // Published without a local insert: A applies it from Redis too.
    a.rep.publish(x.clone()).unwrap();
    a.rep.publish(x.clone()).unwrap();
    a.rep.publish(y.clone()).unwrap();
    // Messages from one connection arrive in order: both copies of X come
    // before Y.
    for n in [&mut a, &mut b] {
        assert_eq!(next_applied(n).await.0, x);
        assert_eq!(next_applied(n).await.0, y);
        let rep = &n.rep;
        wait_until(rep, "three messages", |r| r.stats().received >= 3).await;
        assert_eq!(rep.stats().applied, 2);
        assert_eq!(n.list.len(), 2);
    }
    assert_eq!(a.list.insert(x.clone(), unix_now()), Ok(false));
    assert_eq!(a.rep.revoke(x, unix_now()), Ok(false));
    assert_eq!(a.rep.pending(), 0, "nothing queued for a known entry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca() {
    crate::tls::install_crypto_provider();
    let pki = crate::tls::ThrowAwayPki::generate(&[]).unwrap();
    let redis = RedisServer::start_with(RedisOptions {
        tls: Some((pki.cert_pem.clone(), pki.key_pem.clone())),
        password: Some("tls-pw".into()),
    });
    assert!(redis.url().starts_with("rediss://"));
    let ca = Some(pki.ca_pem.clone().into_bytes());
    let mut a = node_with(&redis.url(), "a", ca.clone());
    let mut b = node_with(&redis.url(), "b", ca);
    connected(&a.rep).await;
    connected(&b.rep).await;
    let rev = revocation("u1", "a");
    a.rep.revoke(rev.clone(), unix_now()).unwrap();
    assert_eq!(next_applied(&mut b).await.0, rev);
    assert!(a.applied.try_recv().is_err());

    // Without the CA the server's certificate is not trusted.
    let untrusted = node(&redis.url(), "u");
    wait_until(&untrusted.rep, "a failed attempt", |r| {
        r.last_error().is_some()
    })
    .await;
    let err = untrusted.rep.last_error().unwrap();
    assert!(err.to_lowercase().contains("certificate"), "{err}");
    assert!(matches!(
        untrusted.rep.state(),
        RedisState::Connecting { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unusable_url_is_refused_at_start_without_its_password() {
    let list = Arc::new(RevocationList::new());
    let err = Replicator::start(
        ReplicatorConfig::new("http://:hunter2@cache:6379/", "a"),
        list,
        Arc::new(|_: &Revocation, _: &AppliedInfo| {}),
    )
    .unwrap_err()
    .to_string();
    assert!(!err.contains("hunter2"), "{err}");
    assert!(err.contains("cache:6379"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_keep_the_subscription_and_a_frozen_redis_is_noticed() {
    let redis = RedisServer::start();
    let mut config = ReplicatorConfig::new(redis.url(), "a");
    config.ping_interval = Duration::from_millis(20);
    let a = node_config(config);
    let mut b = node(&redis.url(), "b");
    connected(&a.rep).await;
    connected(&b.rep).await;
    wait_until(&a.rep, "pinged", |r| r.stats().pings >= 3).await;
    // Pings in subscribed mode leave the subscription working.
    let rev = revocation("u1", "a");
    a.rep.revoke(rev.clone(), unix_now()).unwrap();
    assert_eq!(next_applied(&mut b).await.0, rev);
    wait_until(&a.rep, "own message read back", |r| r.stats().received >= 1).await;
    assert_eq!(a.rep.stats().failures, 0);

    // A frozen server keeps its sockets open; the unanswered ping
    // (COMMAND_TIMEOUT) is what notices it.
    redis.pause();
    wait_until(&a.rep, "degraded", |r| {
        matches!(r.state(), RedisState::Degraded { .. })
    })
    .await;
    assert!(a.rep.last_error().unwrap().contains("timed out"));
    redis.resume();
    connected(&a.rep).await;
    assert_eq!(a.rep.stats().reconnects, 1);
}
