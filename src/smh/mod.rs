//! Everything SMH-specific: resource names, wire types and error codes,
//! operation names, and the token service.

use std::borrow::Cow;

pub mod operation;
pub mod token;
pub mod wire;

/// SMH resources the gateway knows by name (smh-api.md 5.x), each with
/// whether its second path segment is always a SpaceId (smh-api.md 1.1).
/// The last entry, "other", stands for everything else (metrics labels).
pub const RESOURCES: &[(&str, bool)] = &[
    ("album", true),
    ("authority", true),
    ("batch", true),
    ("directory", true),
    ("directory-history", true),
    ("favorite", true),
    ("file", true),
    ("fs-delta", true),
    ("hls", true),
    ("inode", true),
    ("office", true),
    ("quota", false),
    ("recent", true),
    ("recycled", true),
    ("search", true),
    ("share", false),
    ("space", false),
    ("space-quota", true),
    ("stats", false),
    ("task", false),
    ("task-result", false),
    ("token", false),
    ("usage", false),
    ("other", false),
];

/// A resource's row in [`RESOURCES`] (its metrics index) and its name,
/// borrowed from the table when known; unknown resources share the last row.
pub fn resource(name: &str) -> (usize, Cow<'static, str>) {
    match RESOURCES.iter().position(|(r, _)| *r == name) {
        Some(i) => (i, Cow::Borrowed(RESOURCES[i].0)),
        None => (OTHER_RESOURCE, Cow::Owned(name.to_owned())),
    }
}

/// The row of "other" in [`RESOURCES`].
pub const OTHER_RESOURCE: usize = RESOURCES.len() - 1;

/// Whether `/api/v1/<resource>/<LibraryId>/<segment>` names a SpaceId.
pub fn is_space_scoped(resource: &str) -> bool {
    RESOURCES
        .iter()
        .any(|(name, scoped)| *scoped && *name == resource)
}
