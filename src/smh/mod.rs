//! Everything SMH-specific: resource names, wire types and error codes,
//! operation names, and the token service.

pub mod operation;
pub mod token;
pub mod wire;

/// SMH resources the gateway knows by name (smh-api.md 5.x); the last
/// entry, "other", stands for everything else (metrics labels).
pub const RESOURCES: &[&str] = &[
    "album",
    "authority",
    "batch",
    "directory",
    "directory-history",
    "favorite",
    "file",
    "fs-delta",
    "hls",
    "inode",
    "office",
    "quota",
    "recent",
    "recycled",
    "search",
    "share",
    "space",
    "space-quota",
    "stats",
    "task",
    "task-result",
    "token",
    "usage",
    "other",
];

/// Resources whose second segment is always a SpaceId (smh-api.md 1.1, 5.x).
pub const SPACE_SCOPED: &[&str] = &[
    "album",
    "authority",
    "batch",
    "directory",
    "directory-history",
    "favorite",
    "file",
    "fs-delta",
    "hls",
    "inode",
    "office",
    "recent",
    "recycled",
    "search",
    "space-quota",
];
