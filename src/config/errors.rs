//! Configuration problems, each at its place in the file.

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

use toml::Spanned;

use super::env::Environment;

/// A configuration problem at a place in a file (line 0: the whole file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.column, self.message
            )
        }
    }
}

/// All problems found in one file (a TOML syntax error stops at the first).
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    /// One problem about the file as a whole.
    pub fn whole_file(file: &str, message: String) -> Self {
        Self(vec![ConfigError {
            file: file.to_string(),
            line: 0,
            column: 0,
            message,
        }])
    }
}

/// 1-based line and column of a byte offset.
pub fn locate(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

/// Problems collected while building settings, with byte spans.
#[derive(Debug, Default)]
pub struct Problems(Vec<(Option<Range<usize>>, String)>);

impl Problems {
    pub fn push(&mut self, span: Option<Range<usize>>, message: impl Into<String>) {
        self.0.push((span, message.into()));
    }

    /// A problem with a value; defaulted values (empty spans) have no place.
    pub fn at<T>(&mut self, value: &Spanned<T>, message: impl Into<String>) {
        self.push(span_of(value), message);
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Interpolates a text value, reporting a failure at it.
    pub fn text(&mut self, env: &Environment, value: &Spanned<String>) -> Option<String> {
        match env.interpolate(value.get_ref()) {
            Ok(v) => Some(v),
            Err(e) => {
                self.at(value, e);
                None
            }
        }
    }

    /// An interpolated path (not checked).
    pub fn path(&mut self, env: &Environment, value: &Spanned<String>) -> Option<PathBuf> {
        self.text(env, value).map(PathBuf::from)
    }

    /// An interpolated path that must name a readable file.
    pub fn file(
        &mut self,
        env: &Environment,
        value: &Spanned<String>,
        what: &str,
    ) -> Option<PathBuf> {
        let p = self.path(env, value)?;
        if p.is_file() {
            Some(p)
        } else {
            let shown = shown(value.get_ref(), &p.display().to_string());
            self.at(value, format!("{what} {shown} does not exist"));
            None
        }
    }

    /// Turns the collected problems into located errors.
    pub fn into_errors(self, text: &str, file: &str) -> ConfigErrors {
        ConfigErrors(
            self.0
                .into_iter()
                .map(|(span, message)| {
                    let (line, column) = span.map_or((0, 0), |s| locate(text, s.start));
                    ConfigError {
                        file: file.to_string(),
                        line,
                        column,
                        message,
                    }
                })
                .collect(),
        )
    }
}

/// How a value appears in a message: as written when it names `${VAR}`s
/// (their values may be secrets, e.g. a secret put where a path belongs),
/// else as read.
pub fn shown(raw: &str, expanded: &str) -> String {
    if raw.contains("${") {
        raw.to_string()
    } else {
        expanded.to_string()
    }
}

/// Spans of defaulted values are empty; those are reported without a place.
pub fn span_of<T>(v: &Spanned<T>) -> Option<Range<usize>> {
    let s = v.span();
    (s.start != s.end).then_some(s)
}
