//! Everything SMH-specific: resource names and where each puts its SpaceId,
//! wire types and error codes, operation names, and the token service.

use std::borrow::Cow;

/// Flags that select an operation (smh-api.md 1.3).
pub const FLAGS: &[&str] = &[
    "multipart",
    "confirm",
    "upload",
    "renew",
    "info",
    "preview",
    "copy",
    "move",
    "delete",
    "restore",
    "update",
    "lifecycle",
    "by-marker",
    "by-page",
    "stats",
    "calibrate",
    "convert",
    "uncompress",
    "virtual_file",
    "zip-preview",
    "transcode",
    "live_transcode",
    "cancel",
    "modify",
    "save",
];

pub mod delete;
pub mod operation;
pub mod token;
pub mod wire;

/// Where a resource's path names the tenant space, after
/// `/api/v1/<resource>/<LibraryId>/` (smh-api.md 1.1, 3.4, 5.x).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpaceAt {
    /// The next segment is always the SpaceId (`file`, `directory`, ...).
    Always,
    /// A SpaceId when any segment follows the library, library-level
    /// otherwise (`usage/<Lib>` vs `usage/<Lib>/<SpaceId>`, `quota`).
    IfPresent,
    /// A SpaceId when at least two segments follow the library:
    /// `task/<Lib>/<TaskIdList>` is library-level,
    /// `task/<Lib>/<SpaceId>/<TaskIdList>` is in a space.
    BeforeLast,
    /// The tenant-space API itself: `space/<Lib>` (create) and
    /// `GET space/<Lib>/list|count` are library-level; everything else
    /// names a SpaceId (smh-api.md 3.4).
    SpaceApi,
    /// Never a SpaceId: the next segment is something else (a share id, a
    /// quota id, `list`) in at least one of the resource's calls, so the
    /// gateway cannot tell a space from it; every call is library-level.
    Never,
}

/// Every SMH resource the gateway forwards, from the API reference, with
/// where its SpaceId sits. A resource that is not here is not forwarded
/// (404 `RouteNotFound`): the gateway cannot place it in a space, so it
/// cannot judge it. The token API is absent on purpose (never forwarded).
/// The last entry, "other", only labels metrics of refused requests.
pub const RESOURCES: &[(&str, SpaceAt)] = &[
    ("authority", SpaceAt::Always),
    ("batch", SpaceAt::Always),
    ("directory", SpaceAt::Always),
    ("directory-history", SpaceAt::Always),
    ("favorite", SpaceAt::Always),
    ("file", SpaceAt::Always),
    ("fs-delta", SpaceAt::Always),
    ("hls", SpaceAt::Always),
    ("inode", SpaceAt::Always),
    ("office", SpaceAt::Always),
    ("quota", SpaceAt::Never),
    ("recent", SpaceAt::Always),
    ("recycled", SpaceAt::Always),
    ("search", SpaceAt::Always),
    ("share", SpaceAt::Never),
    ("space", SpaceAt::SpaceApi),
    ("space-quota", SpaceAt::Always),
    ("task", SpaceAt::BeforeLast),
    ("task-result", SpaceAt::BeforeLast),
    ("usage", SpaceAt::IfPresent),
    ("other", SpaceAt::Always),
];

/// The row of "other" in [`RESOURCES`].
pub const OTHER_RESOURCE: usize = RESOURCES.len() - 1;

/// A known resource's row in [`RESOURCES`], by its exact name (SMH's
/// names are lowercase; `FILE` or `%66ile` are not `file`).
pub fn lookup(name: &str) -> Option<(usize, SpaceAt)> {
    RESOURCES[..OTHER_RESOURCE]
        .iter()
        .position(|(r, _)| *r == name)
        .map(|i| (i, RESOURCES[i].1))
}

/// A resource's metrics row and its name, borrowed from the table when
/// known; unknown resources share the last row.
pub fn resource(name: &str) -> (usize, Cow<'static, str>) {
    match lookup(name) {
        Some((i, _)) => (i, Cow::Borrowed(RESOURCES[i].0)),
        None => (OTHER_RESOURCE, Cow::Owned(name.to_owned())),
    }
}

/// Longest SpaceId accepted in a path or a policy. SMH's custom ids are at
/// most 32 characters (smh-api.md 3.4); generated ones are shorter than
/// this too, and the bound keeps token keys small.
pub const MAX_SPACE_ID_BYTES: usize = 64;

/// A SpaceId as SMH spells them: `-` (single-tenant) or ASCII letters,
/// digits, `-` and `_`. Notably no `,` (SMH's list separator in
/// `space_id=`), no `%`, `/`, `.` or anything a server could decode.
pub fn is_space_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_SPACE_ID_BYTES
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A LibraryId: the same grammar as a SpaceId (config validates it for
/// configured libraries).
pub fn is_library_id(s: &str) -> bool {
    is_space_id(s)
}

/// Longest user id the gateway passes to SMH's token API.
pub const MAX_USER_ID_BYTES: usize = 256;
/// Longest client (device) or session id passed to SMH's token API.
pub const MAX_CLIENT_ID_BYTES: usize = 128;

/// Whether `s` may be sent to SMH as a `user_id`, `client_id` or
/// `session_id`: non-empty, at most `max` bytes of printable ASCII without
/// space or `,`. SMH reads `,` as a list separator (token deletes take
/// comma-separated ids, smh-api.md 2.4), so one id with a comma could name
/// several; whitespace and non-ASCII could be trimmed or folded into
/// another user's id.
pub fn is_identity_value(s: &str, max: usize) -> bool {
    !s.is_empty() && s.len() <= max && s.bytes().all(|b| (0x21..=0x7e).contains(&b) && b != b',')
}
