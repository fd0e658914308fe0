//! Secrets in the file: `<name> = "${VAR}"` or `<name>_file = "/path"`,
//! never a literal value, so configuration files can be committed and
//! shared.

use std::marker::PhantomData;

use super::env::Environment;
use super::errors::{shown, Problems};
use super::schema::Text;
use crate::secret::Secret;

/// Names the pair of keys a [`SecretSource`] is read from.
pub trait SecretFieldNames {
    const INLINE: &'static str;
    const FILE: &'static str;
}

macro_rules! secret_fields {
    ($ty:ident, $inline:literal, $file:literal) => {
        #[derive(Debug, Default)]
        pub struct $ty;
        impl SecretFieldNames for $ty {
            const INLINE: &'static str = $inline;
            const FILE: &'static str = $file;
        }
    };
}
secret_fields!(SecretField, "secret", "secret_file");
secret_fields!(TokenField, "token", "token_file");
secret_fields!(HmacField, "hmac_secret", "hmac_secret_file");
secret_fields!(RedisUrlField, "redis_url", "redis_url_file");

/// The two keys one secret may be given by, as written.
pub struct SecretSource<'a, N> {
    inline: &'a Option<Text>,
    file: &'a Option<Text>,
    names: PhantomData<N>,
}

/// A secret read from where the file says, and that place (for summaries).
#[derive(Debug, Clone)]
pub struct Resolved {
    pub value: Secret,
    pub origin: String,
}

impl<'a, N: SecretFieldNames> SecretSource<'a, N> {
    pub fn new(inline: &'a Option<Text>, file: &'a Option<Text>) -> Self {
        Self {
            inline,
            file,
            names: PhantomData,
        }
    }

    pub fn is_set(&self) -> bool {
        self.inline.is_some() || self.file.is_some()
    }

    /// Reads the secret, reporting every problem at its position. Trailing
    /// newlines of files are trimmed because editors and `echo` add them.
    /// `required_at`: where to report a missing secret that is required.
    pub fn resolve(
        &self,
        env: &Environment,
        required_at: Option<Option<std::ops::Range<usize>>>,
        out: &mut Problems,
    ) -> Option<Resolved> {
        match (self.inline, self.file) {
            (Some(a), Some(_)) => {
                out.at(
                    a,
                    format!("give either `{}` or `{}`, not both", N::INLINE, N::FILE),
                );
                None
            }
            (Some(raw), None) => {
                let v = raw.get_ref();
                let only_env =
                    v.starts_with("${") && v.ends_with('}') && v.matches("${").count() == 1;
                if !only_env {
                    out.at(raw, format!(
                        "`{}` must be an environment reference like \"${{SMH_SECRET}}\" (secrets never sit in the file); or use `{}`",
                        N::INLINE,
                        N::FILE
                    ));
                    return None;
                }
                match env.interpolate(v) {
                    Ok(value) if value.is_empty() => {
                        out.at(raw, format!("{v} is empty"));
                        None
                    }
                    Ok(value) => Some(Resolved {
                        value: Secret::new(value),
                        origin: format!("{} = {v} (from environment)", N::INLINE),
                    }),
                    Err(e) => {
                        out.at(raw, e);
                        None
                    }
                }
            }
            (None, Some(path)) => {
                let p = out.file(env, path, N::FILE)?;
                let name = shown(path.get_ref(), &p.display().to_string());
                match std::fs::read_to_string(&p) {
                    Ok(text) => {
                        let value = text.trim_end_matches(['\r', '\n']);
                        if value.is_empty() {
                            out.at(path, format!("{} {name} is empty", N::FILE));
                            return None;
                        }
                        Some(Resolved {
                            value: Secret::new(value),
                            origin: format!("{} = {name}", N::FILE),
                        })
                    }
                    Err(e) => {
                        out.at(path, format!("{} {name}: {e}", N::FILE));
                        None
                    }
                }
            }
            (None, None) => {
                if let Some(span) = required_at {
                    out.push(
                        span,
                        format!("`{}` or `{}` is required", N::INLINE, N::FILE),
                    );
                }
                None
            }
        }
    }
}
