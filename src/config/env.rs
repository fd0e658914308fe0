//! `${NAME}` interpolation from an environment the caller hands in: the
//! process environment for `run` and `check-config`, a map in tests, so no
//! test has to change the process's own environment.

use std::collections::HashMap;
use std::sync::Arc;

/// Looks one variable up.
type Lookup = dyn Fn(&str) -> Option<String> + Send + Sync;

/// Where `${NAME}` values come from.
#[derive(Clone)]
pub struct Environment(Arc<Lookup>);

impl std::fmt::Debug for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Environment(..)")
    }
}

impl Environment {
    /// The process environment.
    pub fn process() -> Self {
        Self(Arc::new(|name| std::env::var(name).ok()))
    }

    /// Exactly these variables and no others.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        let map: HashMap<String, String> = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Self(Arc::new(move |name| map.get(name).cloned()))
    }

    pub fn var(&self, name: &str) -> Option<String> {
        (self.0)(name)
    }

    /// Expands `${NAME}`; `$${` writes a literal `${`. A missing or
    /// malformed variable is an error naming it.
    pub fn interpolate(&self, raw: &str) -> Result<String, String> {
        let mut out = String::with_capacity(raw.len());
        let mut rest = raw;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(tail) = after.strip_prefix("${") {
                out.push_str("${");
                rest = tail;
            } else if let Some(tail) = after.strip_prefix('{') {
                let end = tail
                    .find('}')
                    .ok_or_else(|| "unterminated `${` (write `$${` for a literal)".to_string())?;
                let name = &tail[..end];
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                    return Err(format!(
                        "`${{{name}}}` is not a valid environment variable name"
                    ));
                }
                let value = self
                    .var(name)
                    .ok_or_else(|| format!("environment variable {name} is not set"))?;
                out.push_str(&value);
                rest = &tail[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_escapes_and_refuses_what_is_missing() {
        let env = Environment::from_pairs([("A", "x"), ("B_2", "y")]);
        assert_eq!(env.interpolate("${A}/${B_2}").unwrap(), "x/y");
        assert_eq!(env.interpolate("a$${b}").unwrap(), "a${b}");
        assert_eq!(env.interpolate("cost $5").unwrap(), "cost $5");
        assert!(env
            .interpolate("${UNSET}")
            .unwrap_err()
            .contains("UNSET is not set"));
        assert!(env.interpolate("${A").unwrap_err().contains("unterminated"));
        assert!(env
            .interpolate("${A-B}")
            .unwrap_err()
            .contains("not a valid"));
    }
}
