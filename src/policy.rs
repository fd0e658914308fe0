//! Policy: maps a session's roles to what SMH may be asked for — the grant
//! list, the reachable spaces and the token period — and refuses requests
//! outside them before SMH sees them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use crate::config::{RoleConfig, DEFAULT_TOKEN_PERIOD_SECS};
use crate::error::GatewayError;
use crate::session::Session;

/// The single-tenant SpaceId.
pub const SINGLE_TENANT_SPACE: &str = "-";

#[derive(Debug, Clone)]
struct Role {
    grant: Vec<String>,
    spaces: Vec<String>,
    period_secs: u64,
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

#[derive(Debug, Clone, Default)]
pub struct Policy {
    roles: HashMap<String, Role>,
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
                    },
                )
            })
            .collect();
        Self { roles }
    }

    /// Decides for `session` acting in `space` (None = library-level call).
    /// Several roles give the union of grants and spaces, and the shortest
    /// period among them (the most cautious lifetime any role asked for).
    pub fn decide(&self, session: &Session, space: Option<&str>) -> Result<Decision, GatewayError> {
        let roles: Vec<&Role> = session
            .roles
            .iter()
            .filter_map(|name| self.roles.get(name))
            .collect();
        if roles.is_empty() {
            return Err(GatewayError::OperationNotAllowed(
                "the session has no role known to the gateway".into(),
            ));
        }
        if let Some(space) = space {
            let allowed = roles
                .iter()
                .flat_map(|r| r.spaces.iter())
                .any(|pattern| space_matches(pattern, space, session));
            if !allowed {
                return Err(GatewayError::SpaceNotAllowed(space.to_string()));
            }
        }
        let grant: BTreeSet<&str> = roles
            .iter()
            .flat_map(|r| r.grant.iter().map(String::as_str))
            .collect();
        let grant = grant.into_iter().collect::<Vec<_>>().join(",");
        let period_secs = roles
            .iter()
            .map(|r| r.period_secs)
            .min()
            .unwrap_or(DEFAULT_TOKEN_PERIOD_SECS);
        let token_space = match space {
            None | Some(SINGLE_TENANT_SPACE) => "",
            Some(s) => s,
        };
        Ok(Decision {
            grant: grant.into(),
            token_space: token_space.into(),
            period_secs,
        })
    }
}

fn space_matches(pattern: &str, space: &str, session: &Session) -> bool {
    match pattern {
        "*" => true,
        "{user_id}" => space == &*session.user_id,
        "{client_id}" => !session.client_id.is_empty() && space == &*session.client_id,
        literal => literal == space,
    }
}
