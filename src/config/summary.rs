//! The summary `check-config` prints: what the gateway will run with, each
//! secret replaced by where it comes from.

use std::fmt::Write;

use super::Settings;
use crate::session::ValidatorSettings;

pub fn render(cfg: &Settings) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "listener: {}", cfg.listener.address);
    let _ = writeln!(
        s,
        "  tls: cert {} key {}",
        cfg.listener.cert_file.display(),
        cfg.listener.key_file.display()
    );
    let _ = writeln!(
        s,
        "admin: {} (admin token: {})",
        cfg.admin.address, cfg.admin.token_origin
    );
    for l in &cfg.libraries {
        let _ = writeln!(s, "library {}:", l.id);
        let _ = writeln!(s, "  upstream: {}", l.upstream_url);
        if let Some(ca) = &l.ca_file {
            let _ = writeln!(s, "  extra CA: {}", ca.display());
        }
        let _ = writeln!(s, "  library secret: {}", l.secret_origin);
    }
    let t = &cfg.tokens;
    let _ = writeln!(
        s,
        "tokens: capacity {} margin {}s max age {}s",
        t.cache_capacity, t.safety_margin_secs, t.max_age_secs
    );
    let sess = &cfg.session;
    let creds: Vec<String> = sess.sources.iter().map(|c| c.to_string()).collect();
    let mode = match &sess.validator {
        ValidatorSettings::Jwt(_) => "jwt",
        ValidatorSettings::Introspection(_) => "introspection",
    };
    let _ = writeln!(
        s,
        "session: mode {mode}, credentials [{}], user claim {:?}, roles claim {:?}, smh-compatible errors {}",
        creds.join(", "),
        sess.user_claim,
        sess.roles_claim,
        sess.smh_compatible_errors
    );
    let _ = writeln!(s, "  max session lifetime {}s", sess.max_lifetime.as_secs());
    match &cfg.revocation.redis {
        Some(r) => {
            let _ = writeln!(
                s,
                "revocation: shared through Redis ({}){}",
                r.origin,
                if cfg.revocation.redis_ca_pem.is_some() {
                    ", private CA"
                } else {
                    ""
                }
            );
        }
        None => {
            let _ = writeln!(
                s,
                "revocation: local to this process (no revocation.redis_url)"
            );
        }
    }
    match &sess.validator {
        ValidatorSettings::Jwt(j) => {
            let algs: Vec<String> = j.algorithms.iter().map(|a| format!("{a:?}")).collect();
            let _ = writeln!(
                s,
                "  jwt algorithms [{}], hmac key: {}, static public keys: {}",
                algs.join(", "),
                if j.hmac.is_some() { "set" } else { "not set" },
                j.static_keys.len()
            );
            if let Some(r) = &j.remote {
                let _ = writeln!(
                    s,
                    "  jwks url: {} (refresh {}s)",
                    without_query(&r.url),
                    r.refresh.as_secs()
                );
            }
        }
        ValidatorSettings::Introspection(i) => {
            let _ = writeln!(
                s,
                "  introspection: {} (ttl {}s, negative {}s)",
                without_query(&i.url),
                i.ttl.as_secs(),
                i.negative_ttl.as_secs()
            );
        }
    }
    for r in &cfg.roles {
        let spaces: Vec<String> = r.spaces.iter().map(|p| p.to_string()).collect();
        let _ = writeln!(
            s,
            "role {}: grant [{}] spaces [{}] period {}s",
            r.name,
            r.grant.join(","),
            spaces.join(","),
            r.period_secs
        );
    }
    if let Some(c) = &cfg.cors {
        let _ = writeln!(
            s,
            "cors: origins [{}], credentials {}",
            c.origins.join(", "),
            c.credentials
        );
    }
    s
}

/// A URL without its query, which may carry a key.
fn without_query(url: &http::Uri) -> String {
    match url.query() {
        Some(_) => format!(
            "{}://{}{}?…",
            url.scheme_str().unwrap_or("https"),
            url.authority().map_or("", |a| a.as_str()),
            url.path()
        ),
        None => url.to_string(),
    }
}
