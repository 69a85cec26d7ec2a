//! Configuration errors: detailed, naming the file, route and field at fault. Request-time refusals are
//! [`Denial`](crate::policy::Denial)s, never errors.

use std::fmt;
use std::path::PathBuf;

/// Where a configuration problem is: a gate file (and line), a route, a field.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Location {
    /// The gate file, when the configuration came from one.
    pub file: Option<PathBuf>,
    /// 1-based line in that file, when known.
    pub line: Option<usize>,
    /// `[transport]`, `route #2 (GET /v1/x)`, … when the problem is inside a section or route.
    pub section: Option<String>,
    /// The field at fault, when one is.
    pub field: Option<String>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = Vec::new();
        match (&self.file, self.line) {
            (Some(file), Some(line)) => parts.push(format!("{}:{line}", file.display())),
            (Some(file), None) => parts.push(file.display().to_string()),
            (None, Some(line)) => parts.push(format!("line {line}")),
            (None, None) => {}
        }
        if let Some(section) = &self.section {
            parts.push(section.clone());
        }
        if let Some(field) = &self.field {
            parts.push(format!("field `{field}`"));
        }
        f.write_str(&parts.join(": "))
    }
}

/// A configuration the gate refuses to start with. Every message is one line and names what is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", file.display())]
    Read {
        /// The file.
        file: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A value is invalid (bad scope, bad CIDR, unknown field, conflicting routes, …).
    #[error("{location}: {problem}")]
    Invalid {
        /// Where.
        location: Location,
        /// What is wrong, in one line.
        problem: String,
    },
}

impl ConfigError {
    pub(crate) fn invalid(location: Location, problem: impl Into<String>) -> Self {
        let problem: String = problem.into();
        // One line, always: a caller prints it as the CLI's only stderr line.
        let problem = problem
            .split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        ConfigError::Invalid { location, problem }
    }

    /// Where the problem is, if it is inside a configuration (not a read error).
    pub fn location(&self) -> Option<&Location> {
        match self {
            ConfigError::Invalid { location, .. } => Some(location),
            ConfigError::Read { .. } => None,
        }
    }

    /// Names the section the problem is in (e.g. one `[[jwt.issuers]]` entry), replacing a more general one.
    #[cfg(feature = "jwt")]
    pub(crate) fn in_section(mut self, section: &str) -> Self {
        if let ConfigError::Invalid { location, .. } = &mut self {
            location.section = Some(section.to_owned());
        }
        self
    }

    /// Attaches the gate file (and, if unknown yet, a line) to the error.
    pub(crate) fn in_file(mut self, file: &std::path::Path) -> Self {
        if let ConfigError::Invalid { location, .. } = &mut self
            && location.file.is_none()
        {
            location.file = Some(file.to_path_buf());
        }
        self
    }
}
