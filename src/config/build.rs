//! From the file as written ([`super::schema`]) to the typed settings the
//! gateway runs on ([`super::Settings`]): every `${ENV}` expanded, every
//! path read, every key, certificate, pattern and URL parsed once. What
//! this accepts, `run` starts with; what it refuses, it refuses with the
//! place in the file.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use http::Method;
use rustls_pki_types::CertificateDer;

use super::env::Environment;
use super::errors::{shown, span_of, Problems};
use super::schema::*;
use super::{
    AdminSettings, AuditSettings, LibrarySettings, ListenerSettings, RedisUrl, RevocationSettings,
    Settings, SUMMARY_NOT_SET,
};
use crate::gateway::cors::CorsSettings;
use crate::policy::{OperationPattern, RoleSpec, SpacePattern};
use crate::session::credential::CredentialSource;
use crate::session::introspect::IntrospectionSettings;
use crate::session::jwt::{JwtSettings, RemoteJwksSettings};
use crate::session::{SessionSettings, ValidatorSettings};

/// The algorithms `session.jwt.algorithms` may name.
pub const KNOWN_ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// Longest duration any `*_secs` setting may name: they feed `Instant`
/// arithmetic, and a day is far beyond any use.
pub const MAX_DURATION_SECS: u64 = 86_400;

/// Upper bound for `revocation.max_entries`: an entry is a few hundred
/// bytes, so ten million is gigabytes, and a write copies a shard of them.
pub const MAX_REVOCATION_ENTRIES: usize = 10_000_000;

/// Builds everything or reports every problem found.
pub fn settings(raw: Config, env: &Environment, out: &mut Problems) -> Option<Settings> {
    let listener = listener(&raw.listener, env, out);
    let admin = admin(&raw.admin, env, out);
    let libraries = libraries(&raw.libraries, env, out);
    let session = session(&raw.session, env, out);
    let roles = roles(&raw, out);
    let cors = raw.cors.as_ref().and_then(|c| cors(c, out));
    let audit = audit(&raw.audit, env, out);
    let revocation = revocation(&raw.revocation, env, out);
    numbers(&raw, out);
    if let Some(level) = &raw.log.level {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(level) {
            out.push(None, format!("log.level {level:?}: {e}"));
        }
    }
    let (listener, admin, libraries, session, roles, audit, revocation) = (
        listener?,
        admin?,
        libraries?,
        session?,
        roles?,
        audit?,
        revocation?,
    );
    // Port 0 asks the system for any free port: two of those never clash.
    if listener.address == admin.address && admin.address.port() != 0 {
        out.at(
            &raw.admin.address,
            format!(
                "admin.address {} is listener.address too; they need their own ports",
                admin.address
            ),
        );
    }
    let cors = match (raw.cors.is_some(), cors) {
        (true, None) => return None,
        (_, c) => c,
    };
    if !out.is_empty() {
        return None;
    }
    Some(Settings {
        listener,
        admin,
        libraries,
        tokens: raw.tokens,
        session,
        roles,
        cors,
        audit,
        limits: raw.limits,
        upstream: raw.upstream,
        log: raw.log,
        revocation,
    })
}

/// `[revocation]`: the Redis URL (a literal one only without a password),
/// its CA, and this replica's id.
fn revocation(
    r: &RevocationConfig,
    env: &Environment,
    out: &mut Problems,
) -> Option<RevocationSettings> {
    let url = match (&r.redis_url, &r.redis_url_file) {
        (None, None) => None,
        // A literal URL without userinfo holds no secret.
        (Some(raw), None) if !raw.get_ref().starts_with("${") => {
            if raw.get_ref().contains('@') {
                out.at(
                    raw,
                    "revocation.redis_url carries a password: give it as \"${REDIS_URL}\" or in redis_url_file (secrets never sit in the file)",
                );
                return None;
            }
            let text = out.text(env, raw)?;
            Some((text, "revocation.redis_url (in the file)".to_string(), raw))
        }
        (inline, file) => {
            let resolved = r.url_source().resolve(env, None, out)?;
            let at = inline.as_ref().or(file.as_ref()).expect("one is set");
            Some((
                resolved.value.expose().to_string(),
                format!("revocation.{}", resolved.origin),
                at,
            ))
        }
    };
    let url = match url {
        None => None,
        Some((url, origin, at)) => {
            let scheme_ok = url.starts_with("redis://") || url.starts_with("rediss://");
            // Opening parses the URL; it does not connect.
            let parsed = redis::Client::open(url.as_str());
            match (scheme_ok, parsed) {
                (true, Ok(_)) => Some(RedisUrl {
                    url: crate::secret::Secret::new(url),
                    origin,
                }),
                (false, _) => {
                    out.at(
                        at,
                        "revocation.redis_url must start with redis:// or rediss:// (TLS)",
                    );
                    return None;
                }
                (true, Err(e)) => {
                    // The crate's message may quote the URL: never show it.
                    let kind = format!("{:?}", e.kind());
                    out.at(
                        at,
                        format!("revocation.redis_url is not a Redis URL ({kind})"),
                    );
                    return None;
                }
            }
        }
    };
    let ca_pem = match &r.redis_ca_file {
        Some(p) => {
            if url.is_none() {
                out.at(p, "revocation.redis_ca_file needs revocation.redis_url");
                return None;
            }
            // Checked as certificates; the Redis client takes the PEM.
            let (path, _) = certificates(env, p, "revocation.redis_ca_file", out)?;
            match std::fs::read(&path) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    out.at(p, format!("revocation.redis_ca_file: {e}"));
                    return None;
                }
            }
        }
        None => None,
    };
    let replica_id = match &r.replica_id {
        Some(id) => {
            let text = out.text(env, id)?;
            if text.is_empty()
                || text.len() > crate::revocation::MAX_NAME_BYTES
                || !text.bytes().all(|b| b.is_ascii_graphic())
            {
                out.at(
                    id,
                    "revocation.replica_id must be 1-256 printable characters without spaces",
                );
                return None;
            }
            Some(text)
        }
        None => None,
    };
    if !(1..=MAX_REVOCATION_ENTRIES).contains(&r.max_entries) {
        out.push(
            None,
            format!("revocation.max_entries must be 1 to {MAX_REVOCATION_ENTRIES}"),
        );
        return None;
    }
    Some(RevocationSettings {
        redis: url,
        redis_ca_pem: ca_pem,
        replica_id,
        max_entries: r.max_entries,
    })
}

fn address(env: &Environment, v: &Text, what: &str, out: &mut Problems) -> Option<SocketAddr> {
    let text = out.text(env, v)?;
    match text.parse() {
        Ok(a) => Some(a),
        Err(e) => {
            let text = shown(v.get_ref(), &text);
            out.at(v, format!("{what} {text:?}: {e} (expected ip:port)"));
            None
        }
    }
}

fn listener(l: &ListenerConfig, env: &Environment, out: &mut Problems) -> Option<ListenerSettings> {
    let address = address(env, &l.address, "listener.address", out);
    let (cert, key) = match (&l.cert_file, &l.key_file) {
        (Some(c), Some(k)) => (
            out.file(env, c, "listener.cert_file"),
            out.file(env, k, "listener.key_file"),
        ),
        (None, None) => {
            out.push(None, "listener.cert_file and listener.key_file are required: the gateway serves clients over TLS only");
            (None, None)
        }
        _ => {
            out.push(
                None,
                "listener.cert_file and listener.key_file must be given together",
            );
            (None, None)
        }
    };
    let (cert_file, key_file) = (cert?, key?);
    // The pair must make a working server configuration now, not at start.
    let checked = crate::tls::load_certs(&cert_file).and_then(|certs| {
        let key = crate::tls::load_key(&key_file)?;
        crate::tls::server_config(certs, key, crate::tls::ALPN_H2_H1)
    });
    if let Err(e) = checked {
        out.at(l.cert_file.as_ref().expect("checked above"), e.to_string());
        return None;
    }
    Some(ListenerSettings {
        address: address?,
        cert_file,
        key_file,
    })
}

fn admin(a: &AdminConfig, env: &Environment, out: &mut Problems) -> Option<AdminSettings> {
    let address = address(env, &a.address, "admin.address", out);
    let src = a.token_source();
    let token = src.resolve(env, None, out);
    if src.is_set() && token.is_none() {
        return None;
    }
    Some(AdminSettings {
        address: address?,
        check_upstreams: a.check_upstreams,
        check_session_keys: a.check_session_keys,
        check_revocations: a.check_revocations,
        token_origin: token
            .as_ref()
            .map_or_else(|| SUMMARY_NOT_SET.to_string(), |t| t.origin.clone()),
        token: token.map(|t| t.value),
    })
}

fn libraries(
    libs: &[toml::Spanned<LibraryConfig>],
    env: &Environment,
    out: &mut Problems,
) -> Option<Vec<LibrarySettings>> {
    if libs.is_empty() {
        out.push(None, "at least one [[library]] is required");
        return None;
    }
    let mut ids = BTreeSet::new();
    let mut built = Vec::new();
    let mut ok = true;
    for lib in libs {
        let l = lib.get_ref();
        let id = l.id.get_ref();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            out.at(
                &l.id,
                "library id must be non-empty ASCII letters, digits, '-' or '_'",
            );
            ok = false;
        }
        if !ids.insert(id.clone()) {
            out.at(&l.id, format!("library {id:?} is listed twice"));
            ok = false;
        }
        let upstream_url = match &l.upstream {
            Some(u) => out.text(env, u).and_then(|url| {
                let url = url.trim_end_matches('/').to_string();
                match https_url(&url, u.get_ref(), true) {
                    Ok(_) => Some(url),
                    Err(msg) => {
                        out.at(u, msg);
                        None
                    }
                }
            }),
            None => Some(format!("https://{id}.api.tencentsmh.cn")),
        };
        let (ca_file, extra_ca) = match &l.ca_file {
            Some(p) => match certificates(env, p, "ca_file", out) {
                Some((path, certs)) => (Some(path), certs),
                None => {
                    ok = false;
                    (None, Vec::new())
                }
            },
            None => (None, Vec::new()),
        };
        let secret = l.secret_source().resolve(env, Some(span_of(lib)), out);
        match (upstream_url, secret) {
            (Some(upstream_url), Some(secret)) if ok => built.push(LibrarySettings {
                id: id.clone(),
                upstream_url,
                ca_file,
                extra_ca,
                secret: secret.value,
                secret_origin: secret.origin,
            }),
            _ => ok = false,
        }
    }
    ok.then_some(built)
}

/// A PEM bundle that must hold at least one certificate rustls accepts as
/// a trust anchor.
fn certificates(
    env: &Environment,
    p: &Text,
    what: &str,
    out: &mut Problems,
) -> Option<(PathBuf, Vec<CertificateDer<'static>>)> {
    let path = out.file(env, p, what)?;
    let certs = match crate::tls::load_certs(&path) {
        Ok(c) => c,
        Err(e) => {
            out.at(p, e.to_string());
            return None;
        }
    };
    if let Err(e) = crate::tls::client_config(&certs, crate::tls::ALPN_H2_H1) {
        let path = shown(p.get_ref(), &path.display().to_string());
        out.at(p, format!("{what} {path}: {e}"));
        return None;
    }
    Some((path, certs))
}

fn session(s: &SessionConfig, env: &Environment, out: &mut Problems) -> Option<SessionSettings> {
    let mut ok = true;
    let mut sources = Vec::new();
    for c in &s.credentials {
        match CredentialSource::parse(c.get_ref()) {
            Ok(src) => sources.push(src),
            Err(e) => {
                out.at(c, e);
                ok = false;
            }
        }
    }
    if s.credentials.is_empty() {
        out.push(None, "session.credentials must name at least one source");
        ok = false;
    }
    let client_header = match &s.client_header {
        Some(h) => match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(name) => Some(name),
            Err(_) => {
                out.push(
                    None,
                    format!("session.client_header {h:?} is not a header name"),
                );
                ok = false;
                None
            }
        },
        None => None,
    };
    // Both tables are checked whatever the mode, so a file that switches
    // modes later does not hide a broken one.
    let mut material = Vec::new();
    let jwt = jwt(&s.jwt, s.mode == SessionMode::Jwt, env, out, &mut material);
    let introspection = s.introspection.as_ref().map(|i| introspection(i, env, out));
    let validator = match s.mode {
        SessionMode::Jwt => jwt.map(ValidatorSettings::Jwt),
        SessionMode::Introspection => match introspection {
            Some(i) => i.map(ValidatorSettings::Introspection),
            None => {
                out.push(
                    None,
                    "session.mode = \"introspection\" needs a [session.introspection] table",
                );
                None
            }
        },
    };
    let validator = validator?;
    if !ok {
        return None;
    }
    let mut settings = SessionSettings {
        sources,
        validator,
        user_claim: s.user_claim.clone(),
        client_claim: s.client_claim.clone(),
        client_header,
        roles_claim: s.roles_claim.clone(),
        default_roles: s.default_roles.clone(),
        smh_compatible_errors: s.smh_compatible_errors,
        cache_capacity: s.cache_capacity,
        leeway: Duration::from_secs(s.jwt.leeway_secs),
        max_lifetime: Duration::from_secs(s.max_lifetime_secs),
        fingerprint: [0; 32],
    };
    settings.fingerprint = fingerprint(&settings, &material);
    Some(settings)
}

/// A digest of everything the session layer is built from, key material
/// included: a reload that leaves it unchanged keeps the running
/// validator, its verified-session cache and its fetched JWKS.
fn fingerprint(s: &SessionSettings, material: &[u8]) -> [u8; 32] {
    let mut d = ring::digest::Context::new(&ring::digest::SHA256);
    // Length-prefixed, so no two different inputs run together the same.
    let mut put = |b: &[u8]| {
        d.update(&(b.len() as u64).to_be_bytes());
        d.update(b);
    };
    for src in &s.sources {
        put(src.to_string().as_bytes());
    }
    put(s.user_claim.as_bytes());
    put(format!("{:?}", s.client_claim).as_bytes());
    put(format!("{:?}", s.client_header).as_bytes());
    put(s.roles_claim.as_bytes());
    put(format!("{:?}", s.default_roles).as_bytes());
    put(&[u8::from(s.smh_compatible_errors)]);
    put(&s.cache_capacity.to_be_bytes());
    put(&s.leeway.as_secs().to_be_bytes());
    put(&s.max_lifetime.as_secs().to_be_bytes());
    match &s.validator {
        ValidatorSettings::Jwt(j) => {
            put(b"jwt");
            put(format!("{:?}", j.algorithms).as_bytes());
            put(j.hmac.as_ref().map_or(&b""[..], |h| h.expose().as_bytes()));
            put(material);
            put(format!("{:?} {:?} {}", j.issuer, j.audience, j.leeway_secs).as_bytes());
            if let Some(r) = &j.remote {
                put(r.url.to_string().as_bytes());
                for ca in &r.extra_ca {
                    put(ca.as_ref());
                }
                put(format!("{:?} {:?}", r.refresh, r.min_refetch).as_bytes());
            }
        }
        ValidatorSettings::Introspection(i) => {
            put(b"introspection");
            put(i.url.to_string().as_bytes());
            for ca in &i.extra_ca {
                put(ca.as_ref());
            }
            put(format!("{:?} {:?} {:?}", i.timeout, i.ttl, i.negative_ttl).as_bytes());
        }
    }
    let mut out = [0; 32];
    out.copy_from_slice(d.finish().as_ref());
    out
}

/// `material`: the bytes of every key read, for the session fingerprint.
fn jwt(
    j: &JwtConfig,
    in_use: bool,
    env: &Environment,
    out: &mut Problems,
    material: &mut Vec<u8>,
) -> Option<JwtSettings> {
    let mut ok = true;
    let hmac_src = j.hmac_source();
    let hmac = hmac_src.resolve(env, None, out);
    if hmac_src.is_set() && hmac.is_none() {
        ok = false;
    }
    let mut static_keys = Vec::new();
    for p in &j.public_key_files {
        let Some(path) = out.file(env, p, "public key file") else {
            ok = false;
            continue;
        };
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|pem| {
                material.extend_from_slice(&pem);
                crate::session::keys::from_pem(&pem)
            }) {
            Ok(k) => static_keys.push(k),
            Err(e) => {
                let path = shown(p.get_ref(), &path.display().to_string());
                out.at(p, format!("{path}: {e}"));
                ok = false;
            }
        }
    }
    let mut jwk_set = |bytes: &[u8], at: &Text, what: &str, out: &mut Problems| {
        match crate::session::keys::from_jwks(bytes) {
            Ok((keys, skipped)) => {
                for s in skipped {
                    tracing::warn!(source = what, key = %s, "JWK skipped");
                }
                static_keys.extend(keys);
                true
            }
            Err(e) => {
                out.at(at, format!("{what}: {e}"));
                false
            }
        }
    };
    if let Some(p) = &j.jwks_file {
        match out.file(env, p, "jwks_file") {
            Some(path) => match std::fs::read(&path) {
                Ok(bytes) => {
                    material.extend_from_slice(&bytes);
                    let name = shown(p.get_ref(), &path.display().to_string());
                    ok &= jwk_set(&bytes, p, &name, out)
                }
                Err(e) => {
                    let path = shown(p.get_ref(), &path.display().to_string());
                    out.at(p, format!("jwks_file {path}: {e}"));
                    ok = false;
                }
            },
            None => ok = false,
        }
    }
    if let Some(inline) = &j.jwks {
        material.extend_from_slice(inline.get_ref().as_bytes());
        ok &= jwk_set(inline.get_ref().as_bytes(), inline, "jwks", out);
    }
    let remote = match &j.jwks_url {
        Some(u) => {
            let url = out
                .text(env, u)
                .and_then(|url| match https_url(&url, u.get_ref(), false) {
                    Ok(uri) => Some(uri),
                    Err(msg) => {
                        out.at(u, msg);
                        None
                    }
                });
            let extra_ca = match &j.jwks_ca_file {
                Some(p) => certificates(env, p, "jwks_ca_file", out).map(|(_, c)| c),
                None => Some(Vec::new()),
            };
            match (url, extra_ca) {
                (Some(url), Some(extra_ca)) => Some(RemoteJwksSettings {
                    url,
                    extra_ca,
                    refresh: Duration::from_secs(j.jwks_refresh_secs.max(1)),
                    min_refetch: Duration::from_secs(j.jwks_min_refetch_secs),
                }),
                _ => {
                    ok = false;
                    None
                }
            }
        }
        None => None,
    };
    if in_use && j.algorithms.is_empty() {
        out.push(
            None,
            "session.jwt.algorithms must name at least one algorithm",
        );
        ok = false;
    }
    let has_public = !j.public_key_files.is_empty()
        || j.jwks_file.is_some()
        || j.jwks.is_some()
        || j.jwks_url.is_some();
    let mut algorithms = Vec::new();
    for alg in &j.algorithms {
        let a = alg.get_ref().as_str();
        let parsed = KNOWN_ALGORITHMS
            .contains(&a)
            .then(|| jsonwebtoken::Algorithm::from_str(a).ok())
            .flatten();
        match parsed {
            None => {
                out.at(
                    alg,
                    format!(
                        "unknown algorithm {a:?}; expected one of {}",
                        KNOWN_ALGORITHMS.join(", ")
                    ),
                );
                ok = false;
            }
            Some(_) if in_use && a.starts_with("HS") && !hmac_src.is_set() => {
                out.at(
                    alg,
                    format!("{a} needs session.jwt.hmac_secret or hmac_secret_file"),
                );
                ok = false;
            }
            Some(_) if in_use && !a.starts_with("HS") && !has_public => {
                out.at(
                    alg,
                    format!("{a} needs public_key_files, jwks, jwks_file or jwks_url"),
                );
                ok = false;
            }
            Some(parsed) => algorithms.push(parsed),
        }
    }
    ok.then(|| JwtSettings {
        algorithms,
        hmac: hmac.map(|h| h.value),
        static_keys,
        remote,
        issuer: j.issuer.clone(),
        audience: j.audience.clone(),
        leeway_secs: j.leeway_secs,
    })
}

fn introspection(
    i: &IntrospectionConfig,
    env: &Environment,
    out: &mut Problems,
) -> Option<IntrospectionSettings> {
    let url = out
        .text(env, &i.url)
        .and_then(|url| match https_url(&url, i.url.get_ref(), false) {
            Ok(uri) => Some(uri),
            Err(msg) => {
                out.at(&i.url, msg);
                None
            }
        });
    let extra_ca = match &i.ca_file {
        Some(p) => certificates(env, p, "ca_file", out).map(|(_, c)| c),
        None => Some(Vec::new()),
    };
    for (name, v) in [
        ("session.introspection.timeout_secs", i.timeout_secs),
        ("session.introspection.cache_ttl_secs", i.cache_ttl_secs),
        (
            "session.introspection.negative_cache_ttl_secs",
            i.negative_cache_ttl_secs,
        ),
    ] {
        if v > MAX_DURATION_SECS {
            out.push(
                None,
                format!("{name} is at most {MAX_DURATION_SECS} (a day)"),
            );
        }
    }
    Some(IntrospectionSettings {
        url: url?,
        extra_ca: extra_ca?,
        timeout: Duration::from_secs(i.timeout_secs),
        ttl: Duration::from_secs(i.cache_ttl_secs),
        negative_ttl: Duration::from_secs(i.negative_cache_ttl_secs),
    })
}

fn roles(raw: &Config, out: &mut Problems) -> Option<Vec<RoleSpec>> {
    let mut ok = true;
    let mut names = BTreeSet::new();
    let mut built = Vec::new();
    for role in &raw.roles {
        let r = role.get_ref();
        let name = r.name.get_ref();
        if !names.insert(name.clone()) {
            out.at(&r.name, format!("role {name:?} is defined twice"));
            ok = false;
        }
        let period_secs = match &r.period_secs {
            Some(p) => {
                let period = *p.get_ref();
                if period <= raw.tokens.safety_margin_secs {
                    out.at(
                        p,
                        format!(
                            "period_secs {period} must exceed tokens.safety_margin_secs ({})",
                            raw.tokens.safety_margin_secs
                        ),
                    );
                    ok = false;
                }
                period
            }
            None => DEFAULT_TOKEN_PERIOD_SECS,
        };
        if r.spaces.is_empty() {
            out.push(span_of(role), "a role needs at least one space");
            ok = false;
        }
        let mut spaces = Vec::new();
        for space in &r.spaces {
            match SpacePattern::parse(space.get_ref()) {
                Err(e) => {
                    out.at(space, e);
                    ok = false;
                }
                Ok(SpacePattern::ClientId)
                    if raw.session.mode == SessionMode::Jwt
                        && raw.session.client_claim.is_none() =>
                {
                    out.at(space, "\"{client_id}\" would let the client choose its space: with session.mode = \"jwt\" and no session.client_claim there is no verified client id (a client_header value is the client's choice and never fills a template); set session.client_claim or remove the template");
                    ok = false;
                }
                Ok(p) => spaces.push(p),
            }
        }
        let operations = match &r.operations {
            None => None,
            Some(ops) => {
                let mut parsed = Vec::new();
                for op in ops {
                    match OperationPattern::parse(op.get_ref()) {
                        Ok(p) => parsed.push(p),
                        Err(e) => {
                            out.at(op, e);
                            ok = false;
                        }
                    }
                }
                Some(parsed)
            }
        };
        built.push(RoleSpec {
            name: name.clone(),
            grant: r.grant.clone(),
            spaces,
            period_secs,
            operations,
        });
    }
    for name in &raw.session.default_roles {
        if !names.contains(name) {
            out.push(
                None,
                format!("session.default_roles names unknown role {name:?}"),
            );
            ok = false;
        }
    }
    ok.then_some(built)
}

fn cors(c: &CorsConfig, out: &mut Problems) -> Option<CorsSettings> {
    let mut ok = true;
    let mut origins = Vec::new();
    for o in &c.allowed_origins {
        let v = o.get_ref();
        let valid = v == "*"
            || ((v.starts_with("https://") || v.starts_with("http://"))
                && !v.ends_with('/')
                && v.parse::<http::Uri>()
                    .is_ok_and(|u| u.path() == "/" && u.query().is_none()));
        if !valid {
            out.at(
                o,
                format!("CORS origin {v:?} must be \"*\" or scheme://host[:port] without a path"),
            );
            ok = false;
        }
        if v == "*" && c.allow_credentials {
            out.at(o, "\"*\" cannot be combined with allow_credentials = true");
            ok = false;
        }
        origins.push(v.clone());
    }
    let mut methods = Vec::new();
    for m in &c.allowed_methods {
        match Method::from_bytes(m.to_ascii_uppercase().as_bytes()) {
            Ok(m) => methods.push(m),
            Err(_) => {
                out.push(None, format!("cors.allowed_methods: {m:?} is not a method"));
                ok = false;
            }
        }
    }
    for h in &c.allowed_headers {
        let name = h.strip_suffix('*').unwrap_or(h);
        if !name.is_empty() && http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            out.push(
                None,
                format!("cors.allowed_headers: {h:?} is not a header name (or prefix*)"),
            );
            ok = false;
        }
    }
    let mut exposed = Vec::new();
    for h in &c.exposed_headers {
        match http::HeaderName::from_bytes(h.as_bytes()) {
            Ok(n) => exposed.push(n),
            Err(_) => {
                out.push(
                    None,
                    format!("cors.exposed_headers: {h:?} is not a header name"),
                );
                ok = false;
            }
        }
    }
    if c.max_age_secs > MAX_DURATION_SECS {
        out.push(
            None,
            format!("cors.max_age_secs is at most {MAX_DURATION_SECS} (a day)"),
        );
        ok = false;
    }
    ok.then(|| CorsSettings {
        origins,
        methods,
        headers: c.allowed_headers.clone(),
        exposed,
        credentials: c.allow_credentials,
        max_age_secs: c.max_age_secs,
    })
}

fn audit(a: &AuditConfig, env: &Environment, out: &mut Problems) -> Option<AuditSettings> {
    let file = match (&a.file, a.sink) {
        (Some(p), _) => {
            let path = out.path(env, p)?;
            if let Err(e) = writable_place(&path) {
                out.at(
                    p,
                    format!(
                        "audit.file {}: {e}",
                        shown(p.get_ref(), &path.display().to_string())
                    ),
                );
                return None;
            }
            Some(path)
        }
        (None, AuditSink::File | AuditSink::Both) => {
            out.push(
                None,
                "audit.file is required when audit.sink is \"file\" or \"both\"",
            );
            return None;
        }
        (None, _) => None,
    };
    if a.queue_capacity == 0 {
        out.push(None, "audit.queue_capacity must be at least 1");
        return None;
    }
    Some(AuditSettings {
        sink: a.sink,
        file,
        max_file_bytes: a.max_file_bytes,
        max_files: a.max_files,
        queue_capacity: a.queue_capacity,
    })
}

/// Whether the audit file can be opened where it is (checked without
/// creating anything): not a directory, and its nearest existing ancestor
/// a directory the file or its missing parents can be made in.
fn writable_place(path: &std::path::Path) -> Result<(), String> {
    if path.is_dir() {
        return Err("is a directory".into());
    }
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d.as_os_str().is_empty() {
            return Ok(());
        }
        match std::fs::metadata(d) {
            Ok(m) if m.is_dir() => {
                return if m.permissions().readonly() {
                    Err(format!("{} is read-only", d.display()))
                } else {
                    Ok(())
                };
            }
            Ok(_) => return Err(format!("{} is not a directory", d.display())),
            Err(_) => dir = d.parent(),
        }
    }
    Ok(())
}

/// Bounds serde cannot express.
fn numbers(raw: &Config, out: &mut Problems) {
    let l = &raw.limits;
    let t = &raw.tokens;
    for (name, value) in [
        ("tokens.cache_capacity", t.cache_capacity),
        (
            "limits.max_concurrent_requests",
            l.max_concurrent_requests as u64,
        ),
        ("limits.max_body_bytes", l.max_body_bytes),
        ("limits.max_uri_bytes", l.max_uri_bytes as u64),
        ("limits.max_request_headers", l.max_request_headers as u64),
        (
            "limits.max_request_header_bytes",
            l.max_request_header_bytes as u64,
        ),
        ("limits.max_connections", l.max_connections as u64),
        (
            "limits.header_read_timeout_secs",
            l.header_read_timeout_secs,
        ),
        ("limits.idle_timeout_secs", l.idle_timeout_secs),
        (
            "limits.max_concurrent_streams",
            u64::from(l.max_concurrent_streams),
        ),
        ("limits.request_timeout_secs", l.request_timeout_secs),
        ("limits.send_timeout_secs", l.send_timeout_secs),
        ("tokens.cache_max_bytes", t.cache_max_bytes),
        ("tokens.max_keys_per_user", t.max_keys_per_user as u64),
        ("upstream.read_timeout_secs", raw.upstream.read_timeout_secs),
        (
            "upstream.connect_timeout_secs",
            raw.upstream.connect_timeout_secs,
        ),
    ] {
        if value == 0 {
            out.push(None, format!("{name} must be at least 1"));
        }
    }
    for (name, value) in [
        (
            "limits.header_read_timeout_secs",
            l.header_read_timeout_secs,
        ),
        ("limits.idle_timeout_secs", l.idle_timeout_secs),
        ("limits.send_timeout_secs", l.send_timeout_secs),
        ("limits.request_timeout_secs", l.request_timeout_secs),
        ("limits.lame_duck_secs", l.lame_duck_secs),
        ("limits.drain_timeout_secs", l.drain_timeout_secs),
        ("upstream.read_timeout_secs", raw.upstream.read_timeout_secs),
        (
            "upstream.connect_timeout_secs",
            raw.upstream.connect_timeout_secs,
        ),
        ("upstream.pool_idle_secs", raw.upstream.pool_idle_secs),
        ("tokens.refused_retry_secs", t.refused_retry_secs),
        ("tokens.safety_margin_secs", t.safety_margin_secs),
        ("tokens.max_age_secs", t.max_age_secs),
        ("session.jwt.leeway_secs", raw.session.jwt.leeway_secs),
        (
            "session.jwt.jwks_refresh_secs",
            raw.session.jwt.jwks_refresh_secs,
        ),
        (
            "session.jwt.jwks_min_refetch_secs",
            raw.session.jwt.jwks_min_refetch_secs,
        ),
    ] {
        if value > MAX_DURATION_SECS {
            out.push(
                None,
                format!("{name} is at most {MAX_DURATION_SECS} (a day)"),
            );
        }
    }
    let lifetime = raw.session.max_lifetime_secs;
    if lifetime == 0 || lifetime > MAX_SESSION_LIFETIME_SECS {
        out.push(
            None,
            format!("session.max_lifetime_secs must be 1 to {MAX_SESSION_LIFETIME_SECS} (90 days)"),
        );
    }
    // The gateway's own answers (431, 414) need hyper to read the whole
    // head first; its hard backstops sit at these multiples.
    if l.max_uri_bytes > crate::server::MAX_URI_BACKSTOP {
        out.push(
            None,
            format!(
                "limits.max_uri_bytes is at most {}",
                crate::server::MAX_URI_BACKSTOP
            ),
        );
    }
    if l.max_request_headers > crate::server::MAX_HEADERS_BACKSTOP
        || l.max_request_header_bytes > crate::server::MAX_HEADER_BYTES_BACKSTOP
    {
        out.push(
            None,
            format!(
                "limits.max_request_headers is at most {} and limits.max_request_header_bytes at most {}",
                crate::server::MAX_HEADERS_BACKSTOP,
                crate::server::MAX_HEADER_BYTES_BACKSTOP
            ),
        );
    }
}

/// An `https://` URL with a host and no userinfo; for an SMH upstream
/// (`base`), nothing after the authority. Messages show the value as
/// written when it came from `${VAR}`s.
fn https_url(url: &str, raw: &str, base: bool) -> Result<http::Uri, String> {
    let what = if base { "upstream " } else { "" };
    let shown = shown(raw, url);
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("{what}{shown:?} is not a URL: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err(format!(
            "{what}{shown:?} must use https://{}",
            if base {
                " (SMH does not serve plain HTTP)"
            } else {
                ""
            }
        ));
    }
    let Some(authority) = uri.authority() else {
        return Err(format!("{what}{shown:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "{what}{shown:?} must not carry user:password (it would be logged and sent)"
        ));
    }
    if base && uri.path() != "/" && !uri.path().is_empty() {
        return Err(format!("{what}{shown:?} must not have a path"));
    }
    if base && uri.query().is_some() {
        return Err(format!("{what}{shown:?} must not have a query"));
    }
    Ok(uri)
}
