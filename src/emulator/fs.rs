//! The in-memory namespace: per-space trees of directories, files and
//! symlinks, plus pending uploads waiting for their confirm call. File bytes
//! live in the COS store (`cos.rs`); nodes only name their object key.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use http::StatusCode;
use serde_json::{json, Value};

use crate::smh::wire::code;

use super::proto::{extra_code, rfc3339, ApiError};

/// SMH's per-level name limit (smh-api.md 4.2).
pub const MAX_NAME_LEN: usize = 255;

#[derive(Debug, Clone)]
pub struct FileMeta {
    pub created: SystemTime,
    pub modified: SystemTime,
    pub object_key: String,
    pub size: u64,
    pub crc64: u64,
    pub content_type: String,
    pub meta: BTreeMap<String, String>,
}

impl FileMeta {
    /// SMH quotes its eTags like COS does; without an MD5 in the dependency
    /// set the emulator quotes the CRC-64 instead.
    pub fn etag(&self) -> String {
        format!("\"{:016x}\"", self.crc64)
    }
}

#[derive(Debug, Clone)]
pub enum Node {
    Dir {
        created: SystemTime,
        modified: SystemTime,
    },
    File(FileMeta),
    Symlink {
        created: SystemTime,
        target: String,
    },
}

impl Node {
    pub fn type_name(&self) -> &'static str {
        match self {
            Node::Dir { .. } => "dir",
            Node::File(_) => "file",
            Node::Symlink { .. } => "symlink",
        }
    }

    pub fn is_dir(&self) -> bool {
        matches!(self, Node::Dir { .. })
    }

    /// The JSON SMH returns for this node in listings and info calls.
    pub fn describe(&self, path: &str) -> Value {
        let mut v = json!({
            "name": name_of(path),
            "path": segments(path),
            "type": self.type_name(),
        });
        let obj = v.as_object_mut().expect("literal object");
        match self {
            Node::Dir { created, modified } => {
                obj.insert("creationTime".into(), rfc3339(*created).into());
                obj.insert("modificationTime".into(), rfc3339(*modified).into());
            }
            Node::File(f) => {
                obj.insert("creationTime".into(), rfc3339(f.created).into());
                obj.insert("modificationTime".into(), rfc3339(f.modified).into());
                obj.insert("contentType".into(), f.content_type.clone().into());
                obj.insert("size".into(), f.size.to_string().into());
                obj.insert("eTag".into(), f.etag().into());
                obj.insert("crc64".into(), f.crc64.to_string().into());
                obj.insert("metaData".into(), json!(f.meta));
            }
            Node::Symlink { created, target } => {
                obj.insert("creationTime".into(), rfc3339(*created).into());
                obj.insert("modificationTime".into(), rfc3339(*created).into());
                obj.insert("linkTo".into(), target.clone().into());
            }
        }
        v
    }
}

/// Splits a decoded path into its segments, refusing `.` and `..` so no path
/// can escape or alias another.
pub fn normalize(decoded: &str) -> Result<String, ApiError> {
    let mut out: Vec<&str> = Vec::new();
    for seg in decoded.split('/').filter(|s| !s.is_empty()) {
        if seg == "." || seg == ".." {
            return Err(ApiError::bad_request(
                extra_code::ILLEGAL_FILE_NAME,
                format!("path segment {seg:?} is not allowed"),
            ));
        }
        out.push(seg);
    }
    Ok(out.join("/"))
}

pub fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

pub fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or("")
}

pub fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

pub fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Checks every segment against the name limit, with the code SMH uses for
/// directories or files.
pub fn check_name_lengths(path: &str, file: bool) -> Result<(), ApiError> {
    let segs = segments(path);
    for (i, seg) in segs.iter().enumerate() {
        if seg.len() > MAX_NAME_LEN {
            let is_file_name = file && i + 1 == segs.len();
            let c = if is_file_name {
                code::FILE_NAME_LENGTH_EXCEED
            } else {
                code::DIRECTORY_NAME_LENGTH_EXCEED
            };
            return Err(ApiError::bad_request(
                c,
                format!("name longer than {MAX_NAME_LEN} bytes"),
            ));
        }
    }
    Ok(())
}

/// `conflict_resolution_strategy` values (smh-api.md 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conflict {
    Ask,
    Rename,
    Overwrite,
}

impl Conflict {
    pub fn parse(v: Option<&str>, default: Conflict) -> Result<Conflict, ApiError> {
        match v {
            None | Some("") => Ok(default),
            Some("ask") => Ok(Conflict::Ask),
            Some("rename") => Ok(Conflict::Rename),
            Some("overwrite") => Ok(Conflict::Overwrite),
            Some(other) => Err(ApiError::bad_request(
                code::INVALID_CONFLICT_STRATEGY,
                format!("unknown conflict_resolution_strategy {other:?}"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Conflict::Ask => "ask",
            Conflict::Rename => "rename",
            Conflict::Overwrite => "overwrite",
        }
    }
}

pub fn same_name_exists(path: &str) -> ApiError {
    ApiError::conflict(
        code::SAME_NAME_EXISTS,
        format!(
            "a directory or file named {:?} already exists",
            name_of(path)
        ),
    )
}

/// An upload between its start and its confirm.
#[derive(Debug, Clone)]
pub struct PendingUpload {
    pub space: String,
    pub path: String,
    pub object_key: String,
    pub conflict: Conflict,
    pub may_overwrite: bool,
    pub user_id: String,
    pub meta: BTreeMap<String, String>,
    pub created: SystemTime,
    pub expires: SystemTime,
    /// Set for multipart uploads; parts live in the COS store under it.
    pub upload_id: Option<String>,
    pub confirmed: bool,
}

/// What a successful placement of a new node did to the namespace.
pub struct Placed {
    pub path: String,
    pub overwritten: Option<Node>,
}

#[derive(Default)]
pub struct Fs {
    spaces: HashMap<String, BTreeMap<String, Node>>,
    pub uploads: HashMap<String, PendingUpload>,
}

impl Fs {
    fn tree(&mut self, space: &str) -> &mut BTreeMap<String, Node> {
        self.spaces.entry(space.to_string()).or_default()
    }

    /// The node at `path`; the root (empty path) is always a directory.
    pub fn get(&self, space: &str, path: &str) -> Option<Node> {
        if path.is_empty() {
            return Some(Node::Dir {
                created: SystemTime::UNIX_EPOCH,
                modified: SystemTime::UNIX_EPOCH,
            });
        }
        self.spaces.get(space)?.get(path).cloned()
    }

    pub fn is_dir(&self, space: &str, path: &str) -> bool {
        self.get(space, path).is_some_and(|n| n.is_dir())
    }

    pub fn exists(&self, space: &str, path: &str) -> bool {
        self.get(space, path).is_some()
    }

    /// Creates `path` and missing parents. Returns whether `path` itself was
    /// created; a file anywhere on the way is a conflict.
    pub fn mkdir_p(&mut self, space: &str, path: &str, now: SystemTime) -> Result<bool, ApiError> {
        let segs = segments(path);
        let mut cur = String::new();
        let mut created = false;
        for seg in segs {
            cur = join(&cur, seg);
            match self.tree(space).get(&cur) {
                Some(Node::Dir { .. }) => created = false,
                Some(_) => return Err(same_name_exists(&cur)),
                None => {
                    self.tree(space).insert(
                        cur.clone(),
                        Node::Dir {
                            created: now,
                            modified: now,
                        },
                    );
                    created = true;
                }
            }
        }
        Ok(created)
    }

    /// `name (1).ext`, `name (2).ext`, … — the first free variant of `path`.
    pub fn free_name(&self, space: &str, path: &str) -> String {
        if !self.exists(space, path) {
            return path.to_string();
        }
        let parent = parent_of(path);
        let name = name_of(path);
        let (stem, ext) = match name.rfind('.') {
            Some(i) if i > 0 => (&name[..i], &name[i..]),
            _ => (name, ""),
        };
        (1u32..)
            .map(|n| join(parent, &format!("{stem} ({n}){ext}")))
            .find(|p| !self.exists(space, p))
            .expect("some suffix is free")
    }

    /// Resolves where a new node should go under `conflict`, refusing
    /// overwrites of directories and of files when not allowed.
    pub fn resolve_target(
        &self,
        space: &str,
        path: &str,
        conflict: Conflict,
        may_overwrite: bool,
    ) -> Result<String, ApiError> {
        match (self.get(space, path), conflict) {
            (None, _) => Ok(path.to_string()),
            (Some(_), Conflict::Ask) => Err(same_name_exists(path)),
            (Some(_), Conflict::Rename) => Ok(self.free_name(space, path)),
            (Some(Node::Dir { .. }), Conflict::Overwrite) => Err(same_name_exists(path)),
            (Some(_), Conflict::Overwrite) if !may_overwrite => Err(ApiError::forbidden(
                code::NO_PERMISSION,
                "overwriting needs a *_force grant",
            )),
            (Some(_), Conflict::Overwrite) => Ok(path.to_string()),
        }
    }

    /// Inserts a file or symlink node at an already resolved target.
    pub fn place(&mut self, space: &str, path: &str, node: Node) -> Placed {
        let overwritten = self.tree(space).insert(path.to_string(), node);
        Placed {
            path: path.to_string(),
            overwritten,
        }
    }

    /// Direct children of `dir`, by name.
    pub fn children(&self, space: &str, dir: &str) -> Vec<(String, Node)> {
        let Some(tree) = self.spaces.get(space) else {
            return Vec::new();
        };
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        tree.range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Removes `path` and everything under it; returns the removed nodes.
    pub fn remove_tree(&mut self, space: &str, path: &str) -> Vec<Node> {
        let tree = self.tree(space);
        let prefix = format!("{path}/");
        let doomed: Vec<String> = tree
            .keys()
            .filter(|k| *k == path || k.starts_with(&prefix))
            .cloned()
            .collect();
        doomed.iter().filter_map(|k| tree.remove(k)).collect()
    }

    /// Moves `from` (and its subtree) to `to`. Caller has checked the target.
    pub fn move_tree(&mut self, space: &str, from: &str, to: &str, now: SystemTime) {
        let tree = self.tree(space);
        let prefix = format!("{from}/");
        let moving: Vec<String> = tree
            .keys()
            .filter(|k| *k == from || k.starts_with(&prefix))
            .cloned()
            .collect();
        for k in moving {
            if let Some(mut node) = tree.remove(&k) {
                if k == from {
                    touch(&mut node, now);
                }
                let new_key = format!("{to}{}", &k[from.len()..]);
                tree.insert(new_key, node);
            }
        }
    }

    /// Copies `from` (and its subtree) to `to`; file nodes get object keys
    /// from `new_key(old)` so later deletes do not share bytes.
    pub fn copy_tree(
        &mut self,
        space: &str,
        from: &str,
        to: &str,
        now: SystemTime,
        mut new_key: impl FnMut(&str) -> String,
    ) {
        let tree = self.tree(space);
        let prefix = format!("{from}/");
        let copies: Vec<(String, Node)> = tree
            .iter()
            .filter(|(k, _)| *k == from || k.starts_with(&prefix))
            .map(|(k, v)| (format!("{to}{}", &k[from.len()..]), v.clone()))
            .collect();
        for (k, mut node) in copies {
            match &mut node {
                Node::File(f) => {
                    f.object_key = new_key(&f.object_key);
                    f.created = now;
                    f.modified = now;
                }
                Node::Dir { created, modified } => {
                    *created = now;
                    *modified = now;
                }
                Node::Symlink { created, .. } => *created = now,
            }
            tree.insert(k, node);
        }
    }

    pub fn missing_dir(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            code::DIRECTORY_NOT_FOUND,
            format!("directory {path:?} not found"),
        )
    }

    pub fn missing_file(path: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            code::FILE_NOT_FOUND,
            format!("file {path:?} not found"),
        )
    }
}

fn touch(node: &mut Node, now: SystemTime) {
    match node {
        Node::Dir { modified, .. } => *modified = now,
        Node::File(f) => f.modified = now,
        Node::Symlink { .. } => {}
    }
}

/// A content type from the file extension, as SMH derives it at confirm.
pub fn guess_content_type(path: &str) -> &'static str {
    let ext = name_of(path)
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "txt" | "log" | "md" => "text/plain",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "pdf" => "application/pdf",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "mp4" => "video/mp4",
        "mov" => "video/quicktime",
        "mp3" => "audio/mpeg",
        "zip" => "application/zip",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_strategy_keeps_the_extension() {
        let mut fs = Fs::default();
        let now = SystemTime::now();
        fs.mkdir_p("-", "a", now).unwrap();
        fs.place(
            "-",
            "a/x.txt",
            Node::Dir {
                created: now,
                modified: now,
            },
        );
        assert_eq!(fs.free_name("-", "a/x.txt"), "a/x (1).txt");
        assert_eq!(fs.free_name("-", "a/y.txt"), "a/y.txt");
    }

    #[test]
    fn children_are_direct_only() {
        let mut fs = Fs::default();
        let now = SystemTime::now();
        fs.mkdir_p("-", "a/b/c", now).unwrap();
        fs.mkdir_p("-", "ab", now).unwrap();
        let names: Vec<_> = fs.children("-", "a").into_iter().map(|c| c.0).collect();
        assert_eq!(names, vec!["a/b"]);
        let root: Vec<_> = fs.children("-", "").into_iter().map(|c| c.0).collect();
        assert_eq!(root, vec!["a", "ab"]);
    }

    #[test]
    fn dot_segments_are_refused() {
        assert!(normalize("a/../b").is_err());
        assert_eq!(normalize("/a//b/").unwrap(), "a/b");
    }
}
