//! Policy: maps a session's roles to what SMH may be asked for — the grant
//! list, the reachable spaces and the token period — plus an optional
//! allow-list of operations checked here, so a refused request never
//! reaches SMH.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use http::Method;

use crate::config::{RoleConfig, DEFAULT_TOKEN_PERIOD_SECS};
use crate::error::GatewayError;
use crate::session::{claim_str, Session};

/// The single-tenant SpaceId.
pub const SINGLE_TENANT_SPACE: &str = "-";

/// One allow-list entry: `"<METHOD|*> <resource|*>[?flag]"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationPattern {
    method: Option<Method>,
    resource: Option<String>,
    flag: Option<String>,
}

impl OperationPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("operation {s:?}: expected \"<METHOD|*> <resource|*>[?flag]\", e.g. \"GET directory\" or \"POST file?confirm\"")
        };
        let (method, target) = s.trim().split_once(' ').ok_or_else(bad)?;
        let method = match method {
            "*" => None,
            m => Some(Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| bad())?),
        };
        let (resource, flag) = match target.trim().split_once('?') {
            Some((r, f)) if !f.is_empty() => (r, Some(f.to_string())),
            Some(_) => return Err(bad()),
            None => (target.trim(), None),
        };
        if resource.is_empty() || resource.contains(' ') {
            return Err(bad());
        }
        Ok(Self {
            method,
            resource: (resource != "*").then(|| resource.to_string()),
            flag,
        })
    }

    fn matches(&self, op: &Operation<'_>) -> bool {
        self.method.as_ref().is_none_or(|m| m == op.method)
            && self.resource.as_deref().is_none_or(|r| r == op.resource)
            && self.flag.as_deref().is_none_or(|f| has_flag(op.query, f))
    }
}

/// What a request asks SMH to do, as the allow-list sees it.
#[derive(Debug, Clone, Copy)]
pub struct Operation<'a> {
    pub method: &'a Method,
    pub resource: &'a str,
    pub query: Option<&'a str>,
}

/// SMH flags count whether bare (`?info`), empty (`info=`) or `=1`.
pub fn has_flag(query: Option<&str>, flag: &str) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|pair| match pair.split_once('=') {
            None => pair == flag,
            Some((k, v)) => k == flag && (v.is_empty() || v == "1"),
        })
    })
}

#[derive(Debug, Clone)]
struct Role {
    grant: Vec<String>,
    spaces: Vec<String>,
    period_secs: u64,
    operations: Option<Vec<OperationPattern>>,
}

/// What one request may do: the token it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Sorted, de-duplicated, comma-joined SMH grants.
    pub grant: Arc<str>,
    /// The SpaceId the token is scoped to; empty for single-tenant or
    /// library-level calls (SMH: omit `space_id`).
    pub token_space: Arc<str>,
    pub period_secs: u64,
}

/// The union of a session's roles, computed once per distinct role list.
#[derive(Debug)]
struct RoleSet {
    known: bool,
    grant: Arc<str>,
    spaces: Vec<String>,
    period_secs: u64,
    /// `None`: some role allows every operation.
    operations: Option<Vec<OperationPattern>>,
}

/// Distinct role lists remembered; real deployments have a handful, and
/// the bound keeps a flood of invented role claims from growing memory.
const MAX_MEMOISED_ROLE_SETS: usize = 10_000;

#[derive(Debug, Default)]
pub struct Policy {
    roles: HashMap<String, Role>,
    memo: RwLock<HashMap<Arc<[String]>, Arc<RoleSet>>>,
    no_space: Arc<str>,
}

impl Policy {
    pub fn from_config(roles: &[toml::Spanned<RoleConfig>]) -> Self {
        let roles = roles
            .iter()
            .map(|r| {
                let r = r.get_ref();
                (
                    r.name.get_ref().clone(),
                    Role {
                        grant: r.grant.clone(),
                        spaces: r.spaces.clone(),
                        period_secs: r
                            .period_secs
                            .as_ref()
                            .map_or(DEFAULT_TOKEN_PERIOD_SECS, |p| *p.get_ref()),
                        operations: r.operations.as_ref().map(|ops| {
                            ops.iter()
                                .filter_map(|o| OperationPattern::parse(o.get_ref()).ok())
                                .collect()
                        }),
                    },
                )
            })
            .collect();
        Self {
            roles,
            memo: RwLock::default(),
            no_space: Arc::from(""),
        }
    }

    fn role_set(&self, names: &Arc<[String]>) -> Arc<RoleSet> {
        if let Some(set) = self
            .memo
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&**names)
        {
            return set.clone();
        }
        let roles: Vec<&Role> = names.iter().filter_map(|n| self.roles.get(n)).collect();
        let grant: BTreeSet<&str> = roles
            .iter()
            .flat_map(|r| r.grant.iter().map(String::as_str))
            .collect();
        let operations = if roles.iter().any(|r| r.operations.is_none()) {
            None
        } else {
            Some(
                roles
                    .iter()
                    .flat_map(|r| r.operations.iter().flatten().cloned())
                    .collect(),
            )
        };
        let set = Arc::new(RoleSet {
            known: !roles.is_empty(),
            grant: grant.into_iter().collect::<Vec<_>>().join(",").into(),
            spaces: roles
                .iter()
                .flat_map(|r| r.spaces.iter().cloned())
                .collect(),
            period_secs: roles
                .iter()
                .map(|r| r.period_secs)
                .min()
                .unwrap_or(DEFAULT_TOKEN_PERIOD_SECS),
            operations,
        });
        let mut memo = self.memo.write().unwrap_or_else(|p| p.into_inner());
        if memo.len() >= MAX_MEMOISED_ROLE_SETS {
            memo.clear();
        }
        memo.insert(names.clone(), set.clone());
        set
    }

    /// Decides for `session` doing `op` in `space` (None = library-level).
    /// Several roles give the union of grants, spaces and operations, and
    /// the shortest period among them (the most cautious lifetime any of
    /// the roles asked for).
    pub fn decide(
        &self,
        session: &Session,
        space: Option<&str>,
        op: Operation<'_>,
    ) -> Result<Decision, GatewayError> {
        let set = self.role_set(&session.roles);
        if !set.known {
            return Err(GatewayError::OperationNotAllowed(
                "the session has no role known to the gateway".into(),
            ));
        }
        if let Some(list) = &set.operations {
            if !list.iter().any(|p| p.matches(&op)) {
                return Err(GatewayError::OperationNotAllowed(format!(
                    "{} {} is not in the session's allowed operations",
                    op.method, op.resource
                )));
            }
        }
        if let Some(space) = space {
            if !set.spaces.iter().any(|p| space_matches(p, space, session)) {
                return Err(GatewayError::SpaceNotAllowed(space.to_string()));
            }
        }
        let token_space = match space {
            None | Some(SINGLE_TENANT_SPACE) => self.no_space.clone(),
            Some(s) => Arc::from(s),
        };
        Ok(Decision {
            grant: set.grant.clone(),
            token_space,
            period_secs: set.period_secs,
        })
    }
}

/// The claim names `{claims.NAME}` space templates read, so sessions keep
/// only those.
pub fn referenced_claims(roles: &[toml::Spanned<RoleConfig>]) -> Vec<String> {
    let mut names: Vec<String> = roles
        .iter()
        .flat_map(|r| r.get_ref().spaces.iter())
        .filter_map(|p| p.strip_prefix("{claims.").and_then(|r| r.strip_suffix('}')))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}

/// `*`, a literal SpaceId, or a template filled from the session. A
/// template that resolves to nothing matches nothing.
fn space_matches(pattern: &str, space: &str, session: &Session) -> bool {
    match pattern {
        "*" => true,
        "{user_id}" => space == &*session.user_id,
        "{client_id}" => !session.client_id.is_empty() && space == &*session.client_id,
        p => match p
            .strip_prefix("{claims.")
            .and_then(|rest| rest.strip_suffix('}'))
        {
            Some(claim) => {
                claim_str(&session.claims, claim).is_some_and(|v| !v.is_empty() && v == space)
            }
            None => p == space,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user: &str, roles: &[&str], claims: serde_json::Value) -> Session {
        Session {
            user_id: user.into(),
            client_id: "".into(),
            session_id: "".into(),
            roles: roles
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .into(),
            claims: Arc::new(claims.as_object().cloned().unwrap_or_default()),
            issued_at: None,
        }
    }

    fn policy(toml_text: &str) -> Policy {
        #[derive(serde::Deserialize)]
        struct Roles {
            role: Vec<toml::Spanned<RoleConfig>>,
        }
        let r: Roles = toml::from_str(toml_text).unwrap();
        Policy::from_config(&r.role)
    }

    const ROLES: &str = r#"
[[role]]
name = "viewer"
spaces = ["-", "{user_id}"]
period_secs = 3600
operations = ["GET *", "HEAD *"]
[[role]]
name = "editor"
grant = ["upload_file", "create_directory"]
spaces = ["{claims.team_space}"]
period_secs = 1800
[[role]]
name = "admin"
grant = ["admin"]
spaces = ["*"]
"#;

    fn op<'a>(m: &'a Method, r: &'a str, q: Option<&'a str>) -> Operation<'a> {
        Operation {
            method: m,
            resource: r,
            query: q,
        }
    }

    #[test]
    fn viewer_is_read_only_in_its_spaces() {
        let p = policy(ROLES);
        let s = session("u1", &["viewer"], serde_json::json!({}));
        let d = p
            .decide(&s, Some("-"), op(&Method::GET, "directory", None))
            .unwrap();
        assert_eq!((&*d.grant, &*d.token_space, d.period_secs), ("", "", 3600));
        let d = p
            .decide(&s, Some("u1"), op(&Method::GET, "file", Some("info")))
            .unwrap();
        assert_eq!(&*d.token_space, "u1");
        assert!(matches!(
            p.decide(&s, Some("-"), op(&Method::DELETE, "file", None)),
            Err(GatewayError::OperationNotAllowed(_))
        ));
        assert!(matches!(
            p.decide(&s, Some("u2"), op(&Method::GET, "file", None)),
            Err(GatewayError::SpaceNotAllowed(_))
        ));
    }

    #[test]
    fn roles_union_grants_spaces_and_operations() {
        let p = policy(ROLES);
        let s = session(
            "u1",
            &["viewer", "editor"],
            serde_json::json!({"team_space": "team7"}),
        );
        let d = p
            .decide(&s, Some("team7"), op(&Method::PUT, "file", None))
            .unwrap();
        assert_eq!(&*d.grant, "create_directory,upload_file");
        assert_eq!(d.period_secs, 1800, "shortest period of the roles");
        assert!(p
            .decide(&s, Some("u1"), op(&Method::PUT, "file", None))
            .is_ok());
        let no_claim = session("u1", &["editor"], serde_json::json!({}));
        assert!(matches!(
            p.decide(&no_claim, Some("team7"), op(&Method::PUT, "file", None)),
            Err(GatewayError::SpaceNotAllowed(_))
        ));
        let admin = session("root", &["admin", "viewer"], serde_json::json!({}));
        let d = p
            .decide(
                &admin,
                Some("anything"),
                op(&Method::DELETE, "directory", None),
            )
            .unwrap();
        assert_eq!(&*d.grant, "admin");
    }

    #[test]
    fn unknown_roles_are_refused() {
        let p = policy(ROLES);
        let s = session("u1", &["ghost"], serde_json::json!({}));
        assert!(matches!(
            p.decide(&s, Some("-"), op(&Method::GET, "file", None)),
            Err(GatewayError::OperationNotAllowed(_))
        ));
    }

    #[test]
    fn operation_patterns_parse_and_match_flags() {
        let pat = OperationPattern::parse("POST file?confirm").unwrap();
        assert!(pat.matches(&op(&Method::POST, "file", Some("confirm"))));
        assert!(pat.matches(&op(&Method::POST, "file", Some("x=1&confirm=1"))));
        assert!(!pat.matches(&op(&Method::POST, "file", Some("confirm=0"))));
        assert!(!pat.matches(&op(&Method::POST, "file", None)));
        assert!(OperationPattern::parse("GET").is_err());
        assert!(OperationPattern::parse("GET file?").is_err());
        assert!(OperationPattern::parse("G(T file").is_err());
    }
}
