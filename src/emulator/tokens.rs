//! The access-token store (sliding expiry) and the grant table of
//! smh-api.md section 3.3.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use rand::Rng;

/// Prefix SMH puts on every access token (smh-api.md 2.1 example).
pub const TOKEN_PREFIX: &str = "acctk";
/// Random part length; the documented example token is 47 characters long.
const TOKEN_RANDOM_LEN: usize = 42;
const LOWER_ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A live access token as the emulator stores it.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub token: String,
    pub library_id: String,
    /// Spaces the token was minted for; empty when minted without `space_id`.
    pub spaces: Vec<String>,
    pub user_id: String,
    pub client_id: String,
    pub session_id: String,
    pub grants: Vec<String>,
    /// Seconds; also the extension applied on every use.
    pub period: u64,
    pub expires_at: SystemTime,
}

// Tokens are credentials; keep them out of test logs and panic messages.
impl std::fmt::Debug for TokenRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenRecord")
            .field("token", &"<redacted>")
            .field("library_id", &self.library_id)
            .field("spaces", &self.spaces)
            .field("user_id", &self.user_id)
            .field("client_id", &self.client_id)
            .field("session_id", &self.session_id)
            .field("grants", &self.grants)
            .field("period", &self.period)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl TokenRecord {
    pub fn has_grant(&self, name: &str) -> bool {
        self.grants.iter().any(|g| g == name)
    }

    pub fn is_admin(&self) -> bool {
        self.has_grant(grant::ADMIN)
    }

    pub(crate) fn slide(&mut self, now: SystemTime) {
        self.expires_at = now + Duration::from_secs(self.period);
    }
}

/// A fresh opaque token string: `acctk` + lowercase alphanumerics.
pub(crate) fn new_token() -> String {
    let mut rng = rand::thread_rng();
    let mut s = String::with_capacity(TOKEN_PREFIX.len() + TOKEN_RANDOM_LEN);
    s.push_str(TOKEN_PREFIX);
    for _ in 0..TOKEN_RANDOM_LEN {
        s.push(LOWER_ALNUM[rng.gen_range(0..LOWER_ALNUM.len())] as char);
    }
    s
}

#[derive(Default)]
pub(crate) struct TokenStore {
    by_token: HashMap<String, TokenRecord>,
}

impl TokenStore {
    pub fn insert(&mut self, rec: TokenRecord) {
        self.by_token.insert(rec.token.clone(), rec);
    }

    /// The token if it exists and has not expired at `now`; expired entries
    /// are dropped on the way so the store does not grow without bound.
    pub fn live(&mut self, token: &str, now: SystemTime) -> Option<&mut TokenRecord> {
        let expired = self.by_token.get(token)?.expires_at <= now;
        if expired {
            self.by_token.remove(token);
            return None;
        }
        self.by_token.get_mut(token)
    }

    pub fn remove(&mut self, token: &str) -> Option<TokenRecord> {
        self.by_token.remove(token)
    }

    /// Removes the tokens of `users` (never tokens without a user id),
    /// narrowed by client and session when those lists are non-empty.
    pub fn remove_matching(
        &mut self,
        users: &[String],
        clients: &[String],
        sessions: &[String],
    ) -> Vec<TokenRecord> {
        let doomed: Vec<String> = self
            .by_token
            .values()
            .filter(|t| {
                !t.user_id.is_empty()
                    && users.contains(&t.user_id)
                    && (clients.is_empty() || clients.contains(&t.client_id))
                    && (sessions.is_empty() || sessions.contains(&t.session_id))
            })
            .map(|t| t.token.clone())
            .collect();
        doomed
            .iter()
            .filter_map(|t| self.by_token.remove(t))
            .collect()
    }

    pub fn snapshot(&self, now: SystemTime) -> Vec<TokenRecord> {
        let mut v: Vec<_> = self
            .by_token
            .values()
            .filter(|t| t.expires_at > now)
            .cloned()
            .collect();
        v.sort_by(|a, b| a.token.cmp(&b.token));
        v
    }
}

/// Grant names from smh-api.md 3.2. Unknown names are stored and ignored.
pub mod grant {
    pub const ADMIN: &str = "admin";
    pub const SPACE_ADMIN: &str = "space_admin";
    pub const CREATE_SPACE: &str = "create_space";
    pub const CREATE_DIRECTORY: &str = "create_directory";
    pub const DELETE_DIRECTORY: &str = "delete_directory";
    pub const DELETE_DIRECTORY_PERMANENT: &str = "delete_directory_permanent";
    pub const MOVE_DIRECTORY: &str = "move_directory";
    pub const COPY_DIRECTORY: &str = "copy_directory";
    pub const UPLOAD_FILE: &str = "upload_file";
    pub const UPLOAD_FILE_FORCE: &str = "upload_file_force";
    pub const BEGIN_UPLOAD: &str = "begin_upload";
    pub const BEGIN_UPLOAD_FORCE: &str = "begin_upload_force";
    pub const CONFIRM_UPLOAD: &str = "confirm_upload";
    pub const CREATE_SYMLINK: &str = "create_symlink";
    pub const CREATE_SYMLINK_FORCE: &str = "create_symlink_force";
    pub const DELETE_FILE: &str = "delete_file";
    pub const DELETE_FILE_PERMANENT: &str = "delete_file_permanent";
    pub const MOVE_FILE: &str = "move_file";
    pub const MOVE_FILE_FORCE: &str = "move_file_force";
    pub const COPY_FILE: &str = "copy_file";
    pub const COPY_FILE_FORCE: &str = "copy_file_force";
}

/// Operations that need more than read access (smh-api.md 3.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Perm {
    CreateSpace,
    CreateDirectory,
    DeleteDirectory,
    MoveDirectory,
    CopyDirectory,
    BeginUpload,
    ConfirmUpload,
    DeleteFile,
    MoveFile,
    CopyFile,
    Symlink,
}

impl Perm {
    /// Grants that allow the operation. `space_admin` covers everything but
    /// space creation, which needs `admin` or `create_space`.
    fn accepted(self) -> &'static [&'static str] {
        use grant::*;
        match self {
            Perm::CreateSpace => &[ADMIN, CREATE_SPACE],
            Perm::CreateDirectory => &[ADMIN, SPACE_ADMIN, CREATE_DIRECTORY],
            Perm::DeleteDirectory => &[
                ADMIN,
                SPACE_ADMIN,
                DELETE_DIRECTORY,
                DELETE_DIRECTORY_PERMANENT,
            ],
            Perm::MoveDirectory => &[ADMIN, SPACE_ADMIN, MOVE_DIRECTORY],
            Perm::CopyDirectory => &[ADMIN, SPACE_ADMIN, COPY_DIRECTORY],
            Perm::BeginUpload => &[
                ADMIN,
                SPACE_ADMIN,
                UPLOAD_FILE,
                UPLOAD_FILE_FORCE,
                BEGIN_UPLOAD,
                BEGIN_UPLOAD_FORCE,
            ],
            Perm::ConfirmUpload => &[
                ADMIN,
                SPACE_ADMIN,
                UPLOAD_FILE,
                UPLOAD_FILE_FORCE,
                CONFIRM_UPLOAD,
            ],
            Perm::DeleteFile => &[ADMIN, SPACE_ADMIN, DELETE_FILE, DELETE_FILE_PERMANENT],
            Perm::MoveFile => &[ADMIN, SPACE_ADMIN, MOVE_FILE, MOVE_FILE_FORCE],
            Perm::CopyFile => &[ADMIN, SPACE_ADMIN, COPY_FILE, COPY_FILE_FORCE],
            Perm::Symlink => &[
                ADMIN,
                SPACE_ADMIN,
                UPLOAD_FILE,
                UPLOAD_FILE_FORCE,
                CREATE_SYMLINK,
                CREATE_SYMLINK_FORCE,
            ],
        }
    }

    /// Grants that additionally allow overwriting an existing file.
    fn force(self) -> &'static [&'static str] {
        use grant::*;
        match self {
            Perm::BeginUpload => &[ADMIN, SPACE_ADMIN, UPLOAD_FILE_FORCE, BEGIN_UPLOAD_FORCE],
            Perm::ConfirmUpload => &[ADMIN, SPACE_ADMIN, UPLOAD_FILE_FORCE],
            Perm::MoveFile => &[ADMIN, SPACE_ADMIN, MOVE_FILE_FORCE],
            Perm::CopyFile => &[ADMIN, SPACE_ADMIN, COPY_FILE_FORCE],
            Perm::Symlink => &[ADMIN, SPACE_ADMIN, UPLOAD_FILE_FORCE, CREATE_SYMLINK_FORCE],
            other => other.accepted(),
        }
    }

    pub fn allowed(self, grants: &[String]) -> bool {
        grants.iter().any(|g| self.accepted().contains(&g.as_str()))
    }

    pub fn may_overwrite(self, grants: &[String]) -> bool {
        grants.iter().any(|g| self.force().contains(&g.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_have_the_documented_shape() {
        let t = new_token();
        assert!(t.starts_with(TOKEN_PREFIX));
        assert_eq!(t.len(), TOKEN_PREFIX.len() + TOKEN_RANDOM_LEN);
        assert!(t
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit()));
    }

    #[test]
    fn space_admin_cannot_create_spaces() {
        let g = vec![grant::SPACE_ADMIN.to_string()];
        assert!(Perm::CreateDirectory.allowed(&g));
        assert!(!Perm::CreateSpace.allowed(&g));
        assert!(!Perm::BeginUpload.allowed(&[]));
        assert!(Perm::BeginUpload.allowed(&["begin_upload".into()]));
        assert!(!Perm::BeginUpload.may_overwrite(&["begin_upload".into()]));
    }
}
