//! Policy: maps a session's roles to what SMH may be asked for — the grant
//! list, the reachable spaces and the token period — plus an optional
//! allow-list of operations checked here, so a refused request never
//! reaches SMH.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

use http::Method;

use crate::error::GatewayError;
use crate::session::{claim_str, Session};

/// SMH tokens the gateway asks for live one hour: short enough that a token
/// outliving a failed revocation does little harm, long enough to amortise a
/// mint across thousands of requests (SMH's own default is 24 h).
pub const DEFAULT_TOKEN_PERIOD_SECS: u64 = 3600;

/// The single-tenant SpaceId.
pub const SINGLE_TENANT_SPACE: &str = "-";

/// One allow-list entry: `"<METHOD|*> <resource|*>[?operation]"`.
/// Without `?operation` it allows every operation of that method on that
/// resource; with it, exactly the one operation the gateway judged
/// ([`crate::smh::operation`]): a query flag (`POST file?confirm`), a
/// body-selected kind (`PUT file?move`, `PUT file?upload`), or a default
/// (`GET file?download`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperationPattern {
    method: Option<Method>,
    resource: Option<String>,
    operation: Option<String>,
}

/// Operation names a pattern may select besides the query flags.
const JUDGED_NAMES: &[&str] = &[
    "upload", "create", "move", "copy", "symlink", "download", "list", "get", "head", "delete",
    "post", "put",
];

impl OperationPattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("operation {s:?}: expected \"<METHOD|*> <resource|*>[?operation]\", e.g. \"GET directory\" or \"POST file?confirm\"")
        };
        let (method, target) = s.trim().split_once(' ').ok_or_else(bad)?;
        let method = match method {
            "*" => None,
            m => Some(Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| bad())?),
        };
        let (resource, operation) = match target.trim().split_once('?') {
            Some((r, f)) if !f.is_empty() => (r, Some(f.to_string())),
            Some(_) => return Err(bad()),
            None => (target.trim(), None),
        };
        if resource.is_empty() || resource.contains(' ') {
            return Err(bad());
        }
        if resource != "*" && crate::smh::lookup(resource).is_none() {
            return Err(format!(
                "operation {s:?}: {resource:?} is not an SMH resource the gateway forwards"
            ));
        }
        if let Some(op) = &operation {
            if !crate::smh::FLAGS.contains(&op.as_str()) && !JUDGED_NAMES.contains(&op.as_str()) {
                return Err(format!(
                    "operation {s:?}: {op:?} is neither an SMH operation flag nor one of {}",
                    JUDGED_NAMES.join(", ")
                ));
            }
        }
        Ok(Self {
            method,
            resource: (resource != "*").then(|| resource.to_string()),
            operation,
        })
    }

    fn matches(&self, op: &Operation<'_>) -> bool {
        self.method.as_ref().is_none_or(|m| m == op.method)
            && self.resource.as_deref().is_none_or(|r| r == op.resource)
            && self.operation.as_deref().is_none_or(|o| o == op.name)
    }
}

/// What a request asks SMH to do, as judged once for policy and audit.
#[derive(Debug, Clone, Copy)]
pub struct Operation<'a> {
    pub method: &'a Method,
    pub resource: &'a str,
    /// The judged operation name ([`crate::smh::operation::Judged`]).
    pub name: &'a str,
}

/// One entry of a role's `spaces`, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpacePattern {
    /// `*`: every space, and library-level calls.
    Any,
    /// A literal SpaceId (`-` for single-tenant libraries).
    Literal(String),
    /// `{user_id}`: the space named like the verified user id.
    UserId,
    /// `{client_id}`: the space named like the verified client id; never
    /// one taken from a request header.
    ClientId,
    /// `{claims.NAME}`: a claim of the verified session.
    Claim(String),
}

/// Written the way the configuration spells it.
impl std::fmt::Display for SpacePattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Any => f.write_str("*"),
            Self::Literal(l) => f.write_str(l),
            Self::UserId => f.write_str("{user_id}"),
            Self::ClientId => f.write_str("{client_id}"),
            Self::Claim(c) => write!(f, "{{claims.{c}}}"),
        }
    }
}

impl SpacePattern {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "*" => Ok(Self::Any),
            "{user_id}" => Ok(Self::UserId),
            "{client_id}" => Ok(Self::ClientId),
            p if p.starts_with('{') => match p.strip_prefix("{claims.").and_then(|r| r.strip_suffix('}')) {
                Some(name) if !name.is_empty() && !name.contains(['{', '}']) => {
                    Ok(Self::Claim(name.to_string()))
                }
                _ => Err(format!(
                    "space {p:?}: templates are {{user_id}}, {{client_id}} and {{claims.NAME}}"
                )),
            },
            p if crate::smh::is_space_id(p) => Ok(Self::Literal(p.to_string())),
            p => Err(format!(
                "space {p:?}: a SpaceId is \"-\" or ASCII letters, digits, '-' and '_' (at most {} bytes), or \"*\", or a template",
                crate::smh::MAX_SPACE_ID_BYTES
            )),
        }
    }

    /// Whether this entry lets `session` into `space`. A template that
    /// resolves to nothing, or to something that is not a SpaceId,
    /// matches nothing.
    fn matches(&self, space: &str, session: &Session) -> bool {
        match self {
            Self::Any => true,
            Self::Literal(l) => l == space,
            Self::UserId => space == &*session.user_id,
            Self::ClientId => {
                session.client_id_verified
                    && !session.client_id.is_empty()
                    && space == &*session.client_id
            }
            Self::Claim(claim) => {
                claim_str(&session.claims, claim).is_some_and(|v| !v.is_empty() && v == space)
            }
        }
    }
}

/// One `[[role]]`, parsed: what a session holding it may ask SMH for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    pub name: String,
    /// SMH grant names; empty = read-only.
    pub grant: Vec<String>,
    pub spaces: Vec<SpacePattern>,
    /// Lifetime (and sliding extension) of SMH tokens minted for it.
    pub period_secs: u64,
    /// The gateway's allow-list; `None`: every operation.
    pub operations: Option<Vec<OperationPattern>>,
}

#[derive(Debug, Clone)]
struct Role {
    grant: Vec<String>,
    spaces: Vec<SpacePattern>,
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

/// A session's known roles, resolved once per distinct role list, with the
/// token (grant, period) of each combination of them that admitted a
/// request.
#[derive(Debug)]
struct RoleSet {
    roles: Vec<Arc<Role>>,
    /// Keyed by the bit mask of the admitting roles.
    tokens: RwLock<HashMap<u64, (Arc<str>, u64)>>,
}

/// Roles of one session the policy considers (a bit each in a mask); a
/// session claiming more is judged on the first this many it names.
const MAX_ROLES_PER_SESSION: usize = 64;

/// Distinct role lists remembered; real deployments have a handful, and
/// the bound keeps a flood of invented role claims from growing memory.
const MAX_MEMOISED_ROLE_SETS: usize = 10_000;

#[derive(Debug, Default)]
pub struct Policy {
    roles: HashMap<String, Arc<Role>>,
    memo: RwLock<HashMap<Arc<[String]>, Arc<RoleSet>>>,
    no_space: Arc<str>,
}

impl Policy {
    /// The policy of these roles (parsed and checked by the configuration).
    pub fn new(roles: Vec<RoleSpec>) -> Self {
        let roles = roles
            .into_iter()
            .map(|r| {
                (
                    r.name,
                    Arc::new(Role {
                        grant: r.grant,
                        spaces: r.spaces,
                        period_secs: r.period_secs,
                        operations: r.operations,
                    }),
                )
            })
            .collect();
        Self {
            roles,
            memo: RwLock::default(),
            no_space: Arc::from(""),
        }
    }

    /// The claim names `{claims.NAME}` space templates read, so sessions
    /// keep only those.
    pub fn referenced_claims(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .roles
            .values()
            .flat_map(|r| r.spaces.iter())
            .filter_map(|p| match p {
                SpacePattern::Claim(name) => Some(name.clone()),
                _ => None,
            })
            .collect();
        names.sort();
        names.dedup();
        names
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
        let set = Arc::new(RoleSet {
            roles: names
                .iter()
                .filter_map(|n| self.roles.get(n).cloned())
                .take(MAX_ROLES_PER_SESSION)
                .collect(),
            tokens: RwLock::default(),
        });
        let mut memo = self.memo.write().unwrap_or_else(|p| p.into_inner());
        if memo.len() >= MAX_MEMOISED_ROLE_SETS {
            memo.clear();
        }
        memo.insert(names.clone(), set.clone());
        set
    }

    /// Decides for `session` doing `op` in `space` (None = library-level),
    /// where the body also names `source_spaces` (cross-space copy, move or
    /// extraction).
    ///
    /// A request is admitted by a role only when that one role reaches the
    /// space and every source space and allows the operation: roles are
    /// not pooled, so a read-only role for one space and a writing role
    /// for another never add up to writing in the first. The token carries
    /// the grants of the roles that admitted the request, with the
    /// shortest of their periods (the most cautious lifetime any of them
    /// asked for).
    ///
    /// A library-level call gets a token without `space_id`, which SMH
    /// reads as "no particular space" (with `admin`, every space), so only
    /// a role whose spaces include `*` admits it.
    pub fn decide(
        &self,
        session: &Session,
        space: Option<&str>,
        source_spaces: &[String],
        op: Operation<'_>,
    ) -> Result<Decision, GatewayError> {
        let set = self.role_set(&session.roles);
        if set.roles.is_empty() {
            return Err(GatewayError::OperationNotAllowed(
                "the session has no role known to the gateway".into(),
            ));
        }
        let (mut admitted, mut reach_route, mut reach_all) = (0u64, false, false);
        for (i, role) in set.roles.iter().enumerate() {
            let reaches = |s: &str| role.spaces.iter().any(|p| p.matches(s, session));
            let in_route = match space {
                Some(s) => reaches(s),
                None => role.spaces.contains(&SpacePattern::Any),
            };
            if !in_route {
                continue;
            }
            reach_route = true;
            if !source_spaces.iter().all(|s| reaches(s)) {
                continue;
            }
            reach_all = true;
            if role
                .operations
                .as_ref()
                .is_none_or(|list| list.iter().any(|p| p.matches(&op)))
            {
                admitted |= 1 << i;
            }
        }
        if admitted == 0 {
            return Err(match space {
                None if !reach_route => GatewayError::OperationNotAllowed(format!(
                    "{} {} is a library-level call; it needs a role with spaces = [\"*\"]",
                    op.method, op.resource
                )),
                Some(s) if !reach_route => GatewayError::SpaceNotAllowed(s.to_string()),
                _ if !reach_all => GatewayError::SpaceNotAllowed(
                    source_spaces
                        .iter()
                        .find(|s| {
                            !set.roles
                                .iter()
                                .any(|r| r.spaces.iter().any(|p| p.matches(s, session)))
                        })
                        .or(source_spaces.first())
                        .cloned()
                        .unwrap_or_default(),
                ),
                _ => GatewayError::OperationNotAllowed(format!(
                    "{} {}?{} is not allowed by any role of the session in this space",
                    op.method, op.resource, op.name
                )),
            });
        }
        let (grant, period_secs) = set.token_for(admitted);
        let token_space = match space {
            None | Some(SINGLE_TENANT_SPACE) => self.no_space.clone(),
            Some(s) => Arc::from(s),
        };
        Ok(Decision {
            grant,
            token_space,
            period_secs,
        })
    }
}

impl RoleSet {
    /// The grant (sorted, de-duplicated, comma-joined) and period of the
    /// roles in `mask`, computed once per combination.
    fn token_for(&self, mask: u64) -> (Arc<str>, u64) {
        if let Some(t) = self
            .tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&mask)
        {
            return t.clone();
        }
        let chosen: Vec<&Role> = (0..self.roles.len())
            .filter(|i| mask & (1 << i) != 0)
            .map(|i| &*self.roles[i])
            .collect();
        let grant: BTreeSet<&str> = chosen
            .iter()
            .flat_map(|r| r.grant.iter().map(String::as_str))
            .collect();
        let token = (
            Arc::from(grant.into_iter().collect::<Vec<_>>().join(",")),
            chosen
                .iter()
                .map(|r| r.period_secs)
                .min()
                .unwrap_or(DEFAULT_TOKEN_PERIOD_SECS),
        );
        self.tokens
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(mask, token.clone());
        token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(user: &str, roles: &[&str], claims: serde_json::Value) -> Session {
        Session {
            user_id: user.into(),
            client_id: "".into(),
            client_id_verified: false,
            session_id: "".into(),
            roles: roles
                .iter()
                .map(|r| r.to_string())
                .collect::<Vec<_>>()
                .into(),
            claims: Arc::new(claims.as_object().cloned().unwrap_or_default()),
            issued_at: None,
            expires_at: None,
        }
    }

    fn policy(toml_text: &str) -> Policy {
        #[derive(serde::Deserialize)]
        struct Roles {
            role: Vec<Raw>,
        }
        #[derive(serde::Deserialize)]
        struct Raw {
            name: String,
            #[serde(default)]
            grant: Vec<String>,
            spaces: Option<Vec<String>>,
            period_secs: Option<u64>,
            operations: Option<Vec<String>>,
        }
        let r: Roles = toml::from_str(toml_text).unwrap();
        Policy::new(
            r.role
                .into_iter()
                .map(|r| RoleSpec {
                    name: r.name,
                    grant: r.grant,
                    spaces: r
                        .spaces
                        .unwrap_or_else(|| vec!["-".into()])
                        .iter()
                        .map(|s| SpacePattern::parse(s).unwrap())
                        .collect(),
                    period_secs: r.period_secs.unwrap_or(3600),
                    operations: r.operations.map(|ops| {
                        ops.iter()
                            .map(|o| OperationPattern::parse(o).unwrap())
                            .collect()
                    }),
                })
                .collect(),
        )
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
name = "device"
spaces = ["{client_id}"]
[[role]]
name = "confirmer"
spaces = ["-"]
operations = ["POST file?confirm", "PUT file?upload"]
[[role]]
name = "admin"
grant = ["admin"]
spaces = ["*"]
"#;

    fn op<'a>(m: &'a Method, r: &'a str, name: &'a str) -> Operation<'a> {
        Operation {
            method: m,
            resource: r,
            name,
        }
    }

    #[test]
    fn viewer_is_read_only_in_its_spaces() {
        let p = policy(ROLES);
        let s = session("u1", &["viewer"], serde_json::json!({}));
        let d = p
            .decide(&s, Some("-"), &[], op(&Method::GET, "directory", "list"))
            .unwrap();
        assert_eq!((&*d.grant, &*d.token_space, d.period_secs), ("", "", 3600));
        let d = p
            .decide(&s, Some("u1"), &[], op(&Method::GET, "file", "info"))
            .unwrap();
        assert_eq!(&*d.token_space, "u1");
        assert!(matches!(
            p.decide(&s, Some("-"), &[], op(&Method::DELETE, "file", "delete")),
            Err(GatewayError::OperationNotAllowed(_))
        ));
        assert!(matches!(
            p.decide(&s, Some("u2"), &[], op(&Method::GET, "file", "download")),
            Err(GatewayError::SpaceNotAllowed(_))
        ));
        assert!(
            matches!(
                p.decide(&s, None, &[], op(&Method::GET, "usage", "get")),
                Err(GatewayError::OperationNotAllowed(_))
            ),
            "library-level calls need spaces = [\"*\"]"
        );
    }

    #[test]
    fn each_role_admits_on_its_own() {
        let p = policy(ROLES);
        let s = session(
            "u1",
            &["viewer", "editor"],
            serde_json::json!({"team_space": "team7"}),
        );
        let d = p
            .decide(&s, Some("team7"), &[], op(&Method::PUT, "file", "upload"))
            .unwrap();
        assert_eq!(&*d.grant, "create_directory,upload_file");
        assert_eq!(d.period_secs, 1800, "the admitting role's period");
        // Roles are not pooled: the viewer reaches u1 but only reads, the
        // editor writes but not in u1.
        assert!(matches!(
            p.decide(&s, Some("u1"), &[], op(&Method::PUT, "file", "upload")),
            Err(GatewayError::OperationNotAllowed(_))
        ));
        assert!(matches!(
            p.decide(&s, Some("-"), &[], op(&Method::DELETE, "file", "delete")),
            Err(GatewayError::OperationNotAllowed(_))
        ));
        let d = p
            .decide(&s, Some("u1"), &[], op(&Method::GET, "file", "download"))
            .unwrap();
        assert_eq!((&*d.grant, d.period_secs), ("", 3600), "the viewer's token");
        let no_claim = session("u1", &["editor"], serde_json::json!({}));
        assert!(matches!(
            p.decide(
                &no_claim,
                Some("team7"),
                &[],
                op(&Method::PUT, "file", "upload")
            ),
            Err(GatewayError::SpaceNotAllowed(_))
        ));
        let admin = session("root", &["admin", "viewer"], serde_json::json!({}));
        let d = p
            .decide(
                &admin,
                Some("anything"),
                &[],
                op(&Method::DELETE, "directory", "delete"),
            )
            .unwrap();
        assert_eq!(&*d.grant, "admin");
        assert!(p
            .decide(&admin, None, &[], op(&Method::GET, "usage", "get"))
            .is_ok());
    }

    #[test]
    fn a_client_id_fills_a_template_only_when_verified() {
        let p = policy(ROLES);
        let mut s = session("alice", &["device"], serde_json::json!({}));
        s.client_id = "bob-phone".into();
        let get = op(&Method::GET, "file", "download");
        assert!(matches!(
            p.decide(&s, Some("bob-phone"), &[], get),
            Err(GatewayError::SpaceNotAllowed(_))
        ));
        s.client_id_verified = true;
        assert!(p.decide(&s, Some("bob-phone"), &[], get).is_ok());
    }

    #[test]
    fn every_source_space_must_be_allowed() {
        let p = policy(ROLES);
        let s = session("u1", &["viewer"], serde_json::json!({}));
        let get = op(&Method::GET, "file", "download");
        assert!(p.decide(&s, Some("u1"), &["-".into()], get).is_ok());
        assert!(matches!(
            p.decide(&s, Some("u1"), &["bob".into()], get),
            Err(GatewayError::SpaceNotAllowed(_))
        ));
    }

    #[test]
    fn unknown_roles_are_refused() {
        let p = policy(ROLES);
        let s = session("u1", &["ghost"], serde_json::json!({}));
        assert!(matches!(
            p.decide(&s, Some("-"), &[], op(&Method::GET, "file", "download")),
            Err(GatewayError::OperationNotAllowed(_))
        ));
    }

    #[test]
    fn an_operation_pattern_admits_exactly_its_operation() {
        let p = policy(ROLES);
        let s = session("u1", &["confirmer"], serde_json::json!({}));
        for (m, name, ok) in [
            (Method::POST, "confirm", true),
            (Method::POST, "delete", false),
            (Method::POST, "post", false),
            (Method::PUT, "upload", true),
            (Method::PUT, "move", false),
            (Method::PUT, "copy", false),
            (Method::PUT, "symlink", false),
        ] {
            let r = p.decide(&s, Some("-"), &[], op(&m, "file", name));
            assert_eq!(r.is_ok(), ok, "{m} file?{name}: {r:?}");
        }
    }

    #[test]
    fn patterns_and_spaces_parse_strictly() {
        assert!(OperationPattern::parse("POST file?confirm").is_ok());
        assert!(OperationPattern::parse("PUT file?move").is_ok());
        assert!(OperationPattern::parse("* *").is_ok());
        assert!(OperationPattern::parse("GET").is_err());
        assert!(OperationPattern::parse("GET file?").is_err());
        assert!(OperationPattern::parse("G(T file").is_err());
        assert!(OperationPattern::parse("GET fiel").is_err());
        assert!(OperationPattern::parse("POST file?confrim").is_err());
        assert_eq!(SpacePattern::parse("*"), Ok(SpacePattern::Any));
        assert_eq!(
            SpacePattern::parse("{claims.team}"),
            Ok(SpacePattern::Claim("team".into()))
        );
        for bad in [
            "{client}",
            "{claims.}",
            "a,b",
            "sp/1",
            "",
            "{user_id",
            "sp%31",
        ] {
            assert!(SpacePattern::parse(bad).is_err(), "{bad:?}");
        }
    }
}
