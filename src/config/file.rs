//! The gate file's schema (serde) and its validation: everything that can be said of the file alone, before any
//! environment variable, store or key set is read.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{ConfigError, Location};
use crate::network::Cidr;
use crate::policy::{Policy, Requirement, Route};

/// A parsed gate file. Sections other than `[[route]]` are validated for shape here and consumed by the parts of
/// the gate that use them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct GateFile {
    /// `[server]`: only read by `scopegate serve`.
    #[serde(default)]
    pub server: Option<ServerSection>,
    /// `[transport]`.
    #[serde(default)]
    pub transport: TransportSection,
    /// `[api_keys]`.
    #[serde(default)]
    pub api_keys: Option<ApiKeysSection>,
    /// `[jwt]`.
    #[serde(default)]
    pub jwt: Option<JwtSection>,
    /// `[throttle]`.
    #[serde(default)]
    pub throttle: Option<ThrottleSection>,
    /// `[resource]`: RFC 9728 protected resource metadata.
    #[serde(default)]
    pub resource: Option<ResourceSection>,
    /// `[metrics]`: only read by `scopegate serve`.
    #[serde(default)]
    pub metrics: Option<MetricsSection>,
    /// `[shadow]`: a candidate policy, decided beside the enforced one and only audited.
    #[serde(default)]
    pub shadow: Option<ShadowSection>,
    #[serde(default, rename = "route")]
    routes: Vec<toml::Spanned<RouteTable>>,
    #[serde(skip)]
    source: Option<PathBuf>,
    #[serde(skip)]
    text: String,
    /// `[shadow] routes_file`, read and compiled once, when the gate file is loaded.
    #[serde(skip)]
    shadow_compiled: Option<Policy>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerSection {
    /// PEM certificate chain; with `tls_key`, `serve` speaks TLS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key.
    pub tls_key: Option<PathBuf>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct MetricsSection {
    /// Where `serve` answers `GET /metrics` (Prometheus text format), e.g. `127.0.0.1:9464`.
    #[serde(deserialize_with = "socket_address")]
    pub listen: std::net::SocketAddr,
}

fn socket_address<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<std::net::SocketAddr, D::Error> {
    let text = String::deserialize(deserializer)?;
    text.parse().map_err(|_| {
        serde::de::Error::custom(format!(
            "[metrics] listen {text:?}: expected IP:PORT, e.g. \"127.0.0.1:9464\""
        ))
    })
}

/// `[shadow]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ShadowSection {
    /// A file of `[[route]]` tables (nothing else), relative to the gate file: the candidate policy.
    pub routes_file: PathBuf,
}

/// A shadow routes file: `[[route]]` tables only.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoutesFile {
    #[serde(default, rename = "route")]
    routes: Vec<toml::Spanned<RouteTable>>,
}

/// `[transport]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TransportSection {
    /// Defaults to true: a request without TLS evidence is refused.
    #[serde(default = "yes")]
    pub require_tls: bool,
    /// Must be true for `require_tls = false` to be accepted.
    #[serde(default)]
    pub danger_allow_plaintext: bool,
    /// Peers whose forwarding headers are believed. Defaults to none.
    #[serde(default)]
    pub trusted_proxies: Vec<Cidr>,
    /// `Strict-Transport-Security` max-age on allowed responses; 0 disables. Defaults to 0.
    #[serde(default)]
    pub hsts_max_age: u64,
}

fn yes() -> bool {
    true
}

impl Default for TransportSection {
    fn default() -> Self {
        TransportSection {
            require_tls: true,
            danger_allow_plaintext: false,
            trusted_proxies: Vec::new(),
            hsts_max_age: 0,
        }
    }
}

/// `[api_keys]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ApiKeysSection {
    /// Store URL, e.g. `sqlite://keys.db`.
    pub store: String,
    /// Environment variable holding the current pepper (new keys are hashed with it). Defaults to
    /// `SCOPEGATE_PEPPER`.
    #[serde(default = "default_pepper_env")]
    pub pepper_env: String,
    /// The current pepper's version, recorded beside every digest made with it. Defaults to 1.
    #[serde(default = "default_pepper_version")]
    pub pepper_version: u32,
    /// Earlier peppers that keys may still be hashed under, during a pepper rotation. Defaults to none.
    #[serde(default)]
    pub older_peppers: Vec<OlderPepper>,
    /// Header carrying API keys. Defaults to `x-api-key`.
    #[serde(default = "default_key_header")]
    pub header: String,
    /// Key prefix. Defaults to `sg`.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// The longest a cached key is trusted without asking the store, in seconds: the bound on how late a revoke,
    /// disable or rotation reaches this gate when it missed the store's change notification (0: no cache, every
    /// request asks the store). Defaults to 30; at most 86,400.
    #[serde(default = "default_cache_ttl_seconds")]
    pub cache_ttl_seconds: u64,
    /// How often each key's `last_used_at` is written at most, in seconds, behind the requests. Defaults to 60;
    /// from 1 to 86,400.
    #[serde(default = "default_last_used_seconds")]
    pub last_used_seconds: u64,
}

/// The largest `cache_ttl_seconds` and `last_used_seconds` accepted.
const MAX_API_KEYS_SECONDS: u64 = 86_400;

impl ApiKeysSection {
    /// The field at fault, and why, if a number is out of range.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.cache_ttl_seconds > MAX_API_KEYS_SECONDS {
            return Err((
                "cache_ttl_seconds",
                format!("must be at most {MAX_API_KEYS_SECONDS}"),
            ));
        }
        if !(1..=MAX_API_KEYS_SECONDS).contains(&self.last_used_seconds) {
            return Err((
                "last_used_seconds",
                format!("must be from 1 to {MAX_API_KEYS_SECONDS}"),
            ));
        }
        Ok(())
    }
}

/// One entry of `[api_keys] older_peppers`: `{ env = "NAME", version = N }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct OlderPepper {
    /// Environment variable holding this pepper.
    pub env: String,
    /// Its version, as recorded beside the digests made with it.
    pub version: u32,
}

fn default_pepper_version() -> u32 {
    1
}
fn default_cache_ttl_seconds() -> u64 {
    30
}
fn default_last_used_seconds() -> u64 {
    crate::credential::api_key::DEFAULT_LAST_USED_INTERVAL.as_secs()
}
fn default_pepper_env() -> String {
    crate::credential::api_key::DEFAULT_PEPPER_ENV.to_owned()
}
fn default_key_header() -> String {
    crate::credential::api_key::DEFAULT_KEY_HEADER.to_owned()
}
fn default_prefix() -> String {
    crate::credential::api_key::DEFAULT_PREFIX.to_owned()
}

/// One string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// Several values.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `[jwt]`: one issuer's settings, or the defaults of several `[[jwt.issuers]]` entries (which have the same fields,
/// except `issuers` and `fetch`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct JwtSection {
    /// Accepted issuer(s): one string with `discovery`; per entry with `[[jwt.issuers]]`.
    #[serde(default)]
    pub issuer: Option<OneOrMany>,
    /// Accepted audience(s).
    #[serde(default)]
    pub audience: Option<OneOrMany>,
    /// Accepted algorithms, pinned.
    #[serde(default)]
    pub algorithms: Option<Vec<String>>,
    /// RFC 7517 key set file.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A key set fetched over HTTPS (`https://` only).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The key set named by the issuer's OpenID Connect (or RFC 8414) metadata document.
    #[serde(default)]
    pub discovery: bool,
    /// Clock leeway in seconds. Defaults to 30.
    #[serde(default)]
    pub leeway_seconds: Option<u64>,
    /// Required header `typ` values; off by default.
    #[serde(default)]
    pub typ: Option<Vec<String>>,
    /// Claim holding space-separated scopes. Defaults to `scope`.
    #[serde(default)]
    pub scope_claim: Option<String>,
    /// Claim holding a CIDR allowlist.
    #[serde(default)]
    pub allow_ips_claim: Option<String>,
    /// Claims copied into the grant's attributes.
    #[serde(default)]
    pub attr_claims: Option<Vec<String>>,
    /// `[[jwt.issuers]]`: several issuers, each with its own key set; the values above are their defaults.
    #[serde(default)]
    pub issuers: Vec<JwtSection>,
    /// `[jwt.fetch]`: how live key sets are fetched.
    #[serde(default)]
    pub fetch: Option<FetchSection>,
}

/// `[jwt.fetch]`: how live key sets (`jwks_url`, `discovery`) are fetched and refreshed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct FetchSection {
    /// Extra trust anchors (PEM) besides the system roots.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Background refresh interval. Defaults to 300.
    #[serde(default = "default_refresh")]
    pub refresh_seconds: u64,
    /// At most one fetch per issuer this often for a `kid` not in the set. Defaults to 10.
    #[serde(default = "default_cooldown")]
    pub unknown_kid_cooldown_seconds: u64,
    /// How long a failing issuer's last good set is used. Defaults to 86400.
    #[serde(default = "default_max_stale")]
    pub max_stale_seconds: u64,
    /// Time allowed for one fetch. Defaults to 5.
    #[serde(default = "default_timeout")]
    pub timeout_seconds: u64,
    /// Largest document accepted. Defaults to 1 MiB.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u64,
}

impl Default for FetchSection {
    fn default() -> Self {
        FetchSection {
            ca_file: None,
            refresh_seconds: default_refresh(),
            unknown_kid_cooldown_seconds: default_cooldown(),
            max_stale_seconds: default_max_stale(),
            timeout_seconds: default_timeout(),
            max_bytes: default_max_bytes(),
        }
    }
}

fn default_refresh() -> u64 {
    300
}
fn default_cooldown() -> u64 {
    10
}
fn default_max_stale() -> u64 {
    86_400
}
fn default_timeout() -> u64 {
    5
}
fn default_max_bytes() -> u64 {
    1024 * 1024
}

impl FetchSection {
    /// The first setting out of bounds, and why.
    fn check(&self) -> Result<(), (&'static str, &'static str)> {
        for (field, value) in [
            ("refresh_seconds", self.refresh_seconds),
            (
                "unknown_kid_cooldown_seconds",
                self.unknown_kid_cooldown_seconds,
            ),
            ("max_stale_seconds", self.max_stale_seconds),
            ("timeout_seconds", self.timeout_seconds),
            ("max_bytes", self.max_bytes),
        ] {
            if value == 0 {
                return Err((field, "must be at least 1"));
            }
        }
        if self.max_stale_seconds < self.refresh_seconds {
            return Err((
                "max_stale_seconds",
                "is shorter than refresh_seconds: the key set would go stale between two refreshes",
            ));
        }
        Ok(())
    }
}

/// `[resource]`: the RFC 9728 protected resource metadata.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ResourceSection {
    /// The resource identifier (`https://`); also an accepted token audience.
    pub uri: String,
    /// Where clients get tokens for this resource (issuer identifiers).
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    /// The scopes clients may ask for. Defaults to every scope that a route requires.
    #[serde(default)]
    pub scopes_supported: Option<Vec<String>>,
}

impl OneOrMany {
    fn is_empty(&self) -> bool {
        matches!(self, OneOrMany::Many(v) if v.is_empty())
    }
}

/// Where a key set comes from, as one `[jwt]` table says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeySource<'a> {
    File(&'a Path),
    Url(&'a str),
    Discovery,
}

impl JwtSection {
    /// The first list that restricts something and is empty (`typ = []` would otherwise turn the check off).
    fn check_lists(&self) -> Result<(), &'static str> {
        if self.issuer.as_ref().is_some_and(OneOrMany::is_empty) {
            return Err("issuer");
        }
        if self.audience.as_ref().is_some_and(OneOrMany::is_empty) {
            return Err("audience");
        }
        if self.algorithms.as_ref().is_some_and(Vec::is_empty) {
            return Err("algorithms");
        }
        if self.typ.as_ref().is_some_and(Vec::is_empty) {
            return Err("typ");
        }
        Ok(())
    }

    /// The one key source this table names, if any.
    pub(super) fn key_source(&self) -> Result<Option<KeySource<'_>>, &'static str> {
        let mut sources = self
            .jwks_file
            .as_deref()
            .map(KeySource::File)
            .into_iter()
            .chain(self.jwks_url.as_deref().map(KeySource::Url))
            .chain(self.discovery.then_some(KeySource::Discovery));
        let first = sources.next();
        if sources.next().is_some() {
            return Err("jwks_file, jwks_url and discovery = true exclude each other: set one");
        }
        Ok(first)
    }

    /// The issuer entries: each `[[jwt.issuers]]` table, or `[jwt]` itself. Each with its display name.
    pub(super) fn entries(&self) -> Vec<(String, &JwtSection)> {
        if self.issuers.is_empty() {
            vec![("[jwt]".to_owned(), self)]
        } else {
            self.issuers
                .iter()
                .enumerate()
                .map(|(i, e)| (format!("[[jwt.issuers]] #{}", i + 1), e))
                .collect()
        }
    }

    /// Everything that can be said of `[jwt]` without reading a key set: one line naming the table and field.
    fn check(&self) -> Result<(), (String, &'static str, String)> {
        const EMPTY: &str = "an empty list here would restrict nothing; list at least one value (or leave the field out where it is optional)";
        let fail = |table: &str, field: &'static str, why: &str| {
            Err((table.to_owned(), field, why.to_owned()))
        };
        if let Err(field) = self.check_lists() {
            return fail("[jwt]", field, EMPTY);
        }
        if let Some(fetch) = &self.fetch
            && let Err((field, why)) = fetch.check()
        {
            return fail("[jwt.fetch]", field, why);
        }
        if !self.issuers.is_empty() {
            if self.issuer.is_some() {
                return fail(
                    "[jwt]",
                    "issuer",
                    "with [[jwt.issuers]], each entry names its issuer; [jwt] holds only their defaults",
                );
            }
            if !matches!(self.key_source(), Ok(None)) {
                return fail(
                    "[jwt]",
                    "jwks_file",
                    "with [[jwt.issuers]], each entry has its own key set (key sets are never shared between issuers)",
                );
            }
        }
        for (table, entry) in self.entries() {
            if !std::ptr::eq(entry, self) {
                if let Err(field) = entry.check_lists() {
                    return fail(&table, field, EMPTY);
                }
                if !entry.issuers.is_empty() || entry.fetch.is_some() {
                    return fail(
                        &table,
                        "issuers",
                        "an entry cannot hold issuers or fetch settings",
                    );
                }
            }
            match &entry.issuer {
                None => return fail(&table, "issuer", "missing: name the issuer (`iss`)"),
                Some(OneOrMany::Many(list)) if entry.discovery && list.len() != 1 => {
                    return fail(
                        &table,
                        "issuer",
                        "discovery needs exactly one issuer (the metadata document's issuer must equal it)",
                    );
                }
                Some(_) => {}
            }
            if entry.audience.is_none() && self.audience.is_none() {
                return fail(&table, "audience", "missing: name the accepted audience");
            }
            if entry.algorithms.is_none() && self.algorithms.is_none() {
                return fail(
                    &table,
                    "algorithms",
                    "missing: pin the algorithms your identity provider signs with",
                );
            }
            match entry.key_source() {
                Err(why) => return fail(&table, "jwks_url", why),
                Ok(None) => {
                    return fail(
                        &table,
                        "jwks_file",
                        "missing: set jwks_file, jwks_url or discovery = true",
                    );
                }
                Ok(Some(KeySource::Url(url))) if !is_https_url(url) => {
                    return fail(
                        &table,
                        "jwks_url",
                        &format!(
                            "{url:?} is not an https:// URL (key sets are fetched over HTTPS only)"
                        ),
                    );
                }
                Ok(Some(KeySource::Discovery)) => {
                    if let Some(issuer) = entry.issuer.as_ref().and_then(|i| i.to_vec().pop())
                        && !is_https_url(&issuer)
                    {
                        return fail(
                            &table,
                            "issuer",
                            &format!("{issuer:?}: discovery needs an https:// issuer"),
                        );
                    }
                }
                Ok(Some(_)) => {}
            }
        }
        Ok(())
    }
}

/// An absolute `https://` URL with a host: the shape every fetched or published URL must have.
pub(crate) fn is_https_url(url: &str) -> bool {
    url.strip_prefix("https://").is_some_and(|rest| {
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !host.contains('@')
    }) && url.bytes().all(|b| b.is_ascii_graphic())
}

/// `[throttle]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ThrottleSection {
    /// Failed authentications per minute per client before 429.
    pub failed_auth_per_minute: u32,
    /// Burst allowance.
    pub burst: u32,
}

/// One `[[route]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteTable {
    path: String,
    methods: Vec<String>,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    require: Option<RequireTable>,
    #[serde(default)]
    bind: BTreeMap<String, String>,
    #[serde(default)]
    allow_ips: Option<Vec<String>>,
    #[serde(default)]
    auth: AuthField,
}

/// `auth = "required" | "optional"` of a route.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum AuthField {
    #[default]
    Required,
    Optional,
}

/// The route rules of `[[route]]` tables, as builder values; `text` is the file they were read from (for lines).
fn routes_of(tables: &[toml::Spanned<RouteTable>], text: &str) -> Result<Vec<Route>, ConfigError> {
    let mut routes = Vec::with_capacity(tables.len());
    for (i, spanned) in tables.iter().enumerate() {
        let table = spanned.get_ref();
        let line = line_of(text, spanned.span().start);
        let mut route = Route::new(table.methods.clone(), table.path.clone());
        route.line = Some(line);
        if table.public {
            route = route.public();
        }
        if table.auth == AuthField::Optional {
            route = route.optional_auth();
        }
        if let Some(require) = &table.require {
            let requirement = require.compile().map_err(|problem| {
                ConfigError::invalid(
                    Location {
                        line: Some(line),
                        section: Some(format!("route #{} ({})", i + 1, route.label())),
                        field: Some("require".to_owned()),
                        ..Location::default()
                    },
                    problem,
                )
            })?;
            route = route.require(requirement);
        }
        for (param, attribute) in &table.bind {
            route = route.bind(param.clone(), attribute.clone());
        }
        if let Some(list) = &table.allow_ips {
            route = route.allow_ips(list.clone());
        }
        routes.push(route);
    }
    Ok(routes)
}

/// `{ all = [...] }` or `{ any = [...] }`, members being scopes or nested tables.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequireTable {
    #[serde(default)]
    all: Option<Vec<RequireItem>>,
    #[serde(default)]
    any: Option<Vec<RequireItem>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RequireItem {
    Scope(String),
    Nested(RequireTable),
}

impl RequireTable {
    fn compile(&self) -> Result<Requirement, String> {
        match (&self.all, &self.any) {
            (Some(items), None) => Requirement::all(Self::items(items)?).map_err(|e| e.to_string()),
            (None, Some(items)) => Requirement::any(Self::items(items)?).map_err(|e| e.to_string()),
            _ => Err("a requirement table has exactly one of `all` or `any`".to_owned()),
        }
    }

    fn items(items: &[RequireItem]) -> Result<Vec<Requirement>, String> {
        items
            .iter()
            .map(|item| match item {
                RequireItem::Scope(s) => Requirement::scope(s).map_err(|e| e.to_string()),
                RequireItem::Nested(t) => t.compile(),
            })
            .collect()
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(0, |t| t.bytes().filter(|b| *b == b'\n').count())
        + 1
}

impl GateFile {
    /// Reads and validates a gate file.
    pub fn from_path(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            file: path.to_path_buf(),
            source,
        })?;
        let mut gate = Self::parse(&text).map_err(|e| e.in_file(path))?;
        gate.source = Some(path.to_path_buf());
        // The shadow routes file is relative to this one: read and compiled now that its place is known.
        gate.shadow_compiled = gate.load_shadow_policy()?;
        Ok(gate)
    }

    /// Parses and validates a gate file's text. A `[shadow] routes_file` is read relative to the working
    /// directory.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        let mut gate = Self::parse(text)?;
        gate.shadow_compiled = gate.load_shadow_policy()?;
        Ok(gate)
    }

    /// The candidate policy of `[shadow] routes_file`, as compiled when the file was loaded; `None` without
    /// `[shadow]`.
    pub fn shadow_policy(&self) -> Option<&Policy> {
        self.shadow_compiled.as_ref()
    }

    /// Reads and compiles `[shadow] routes_file`. Errors name the routes file, its line and route.
    fn load_shadow_policy(&self) -> Result<Option<Policy>, ConfigError> {
        let Some(shadow) = &self.shadow else {
            return Ok(None);
        };
        let path = self.resolve(&shadow.routes_file);
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            file: path.clone(),
            source,
        })?;
        let file: RoutesFile = toml::from_str(&text).map_err(|e| {
            let line = e.span().map(|s| line_of(&text, s.start));
            ConfigError::invalid(
                Location {
                    line,
                    ..Location::default()
                },
                e.message(),
            )
            .in_file(&path)
        })?;
        if file.routes.is_empty() {
            return Err(ConfigError::invalid(
                Location {
                    line: None,
                    ..Location::default()
                },
                "no [[route]] table: a shadow policy of no routes would deny everything",
            )
            .in_file(&path));
        }
        let routes = routes_of(&file.routes, &text).map_err(|e| e.in_file(&path))?;
        Policy::builder()
            .routes(routes)
            .build()
            .map(Some)
            .map_err(|e| e.in_file(&path))
    }

    fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut gate: GateFile = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            ConfigError::invalid(
                Location {
                    line,
                    ..Location::default()
                },
                e.message(),
            )
        })?;
        text.clone_into(&mut gate.text);
        gate.validate()?;
        Ok(gate)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let at = |section: &str, field: &str| Location {
            section: Some(format!("[{section}]")),
            field: Some(field.to_owned()),
            ..Location::default()
        };
        let t = &self.transport;
        if !t.require_tls && !t.danger_allow_plaintext {
            return Err(ConfigError::invalid(
                at("transport", "require_tls"),
                "require_tls = false is only accepted with danger_allow_plaintext = true",
            ));
        }
        for cidr in &t.trusted_proxies {
            crate::network::check_trusted_proxy(cidr).map_err(|problem| {
                ConfigError::invalid(at("transport", "trusted_proxies"), problem)
            })?;
        }
        #[cfg(not(feature = "jwt"))]
        if self.jwt.is_some() {
            return Err(ConfigError::invalid(
                at("jwt", "issuer"),
                "this build has no JWT support (enable the scopegate crate's `jwt` feature)",
            ));
        }
        if let Some(jwt) = &self.jwt {
            jwt.check().map_err(|(table, field, why)| {
                ConfigError::invalid(
                    Location {
                        section: Some(table),
                        field: Some(field.to_owned()),
                        ..Location::default()
                    },
                    why,
                )
            })?;
        }
        if let Some(resource) = &self.resource {
            crate::layer::ProtectedResource::check_uri(&resource.uri)
                .map_err(|why| ConfigError::invalid(at("resource", "uri"), why))?;
            for server in &resource.authorization_servers {
                crate::layer::ProtectedResource::check_uri(server).map_err(|why| {
                    ConfigError::invalid(at("resource", "authorization_servers"), why)
                })?;
            }
        }
        if let Some(keys) = &self.api_keys {
            self.key_header(keys)?;
            keys.check()
                .map_err(|(field, why)| ConfigError::invalid(self.at("api_keys", field), why))?;
        }
        self.throttle_config()?;
        // Compile the routes once now, so that a bad route fails at load time.
        self.policy().map(drop)
    }

    /// The file this was read from, if any.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// The route rules as builder values.
    fn routes(&self) -> Result<Vec<Route>, ConfigError> {
        routes_of(&self.routes, &self.text)
    }

    /// Compiles the `[[route]]` tables into a [`Policy`].
    pub fn policy(&self) -> Result<Policy, ConfigError> {
        let policy = Policy::builder().routes(self.routes()?).build();
        match &self.source {
            Some(file) => policy.map_err(|e| e.in_file(file)),
            None => policy,
        }
    }
}

/// Resolves a path written in the gate file: relative paths are relative to the file's directory.
fn resolve_path(base: Option<&Path>, path: &Path) -> PathBuf {
    match base.and_then(Path::parent) {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_path_buf(),
    }
}

impl GateFile {
    pub(super) fn at(&self, section: &str, field: &str) -> Location {
        Location {
            file: self.source.clone(),
            line: None,
            section: Some(format!("[{section}]")),
            field: Some(field.to_owned()),
        }
    }

    /// A path written in the file, resolved against the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        resolve_path(self.source.as_deref(), path)
    }

    /// The `sqlite://PATH` URL of `[api_keys] store`, with a relative path resolved against the file's directory.
    pub fn store_url(&self) -> Option<Result<String, ConfigError>> {
        let section = self.api_keys.as_ref()?;
        let store = section.store.as_str();
        Some(match store.strip_prefix("sqlite://") {
            Some(path) if !path.is_empty() => Ok(format!(
                "sqlite://{}",
                self.resolve(Path::new(path)).display()
            )),
            _ if store.starts_with("postgres://") || store.starts_with("postgresql://") => {
                Ok(store.to_owned())
            }
            // The URL itself is not repeated: it may hold a password.
            _ => Err(ConfigError::invalid(
                self.at("api_keys", "store"),
                format!(
                    "a store URL of scheme {:?} is not supported: expected sqlite://PATH or postgres://USER@HOST[:PORT]/DB",
                    store
                        .split("://")
                        .next()
                        .unwrap_or("")
                        .chars()
                        .take(20)
                        .collect::<String>()
                ),
            )),
        })
    }

    /// `[api_keys] header` as a header name, or an error naming the field.
    pub(super) fn key_header(
        &self,
        keys: &ApiKeysSection,
    ) -> Result<http::HeaderName, ConfigError> {
        http::HeaderName::from_bytes(keys.header.as_bytes()).map_err(|_| {
            ConfigError::invalid(
                self.at("api_keys", "header"),
                format!("{:?} is not a header name", keys.header),
            )
        })
    }

    /// `[throttle]` as the gate takes it, if the section is present; a zero is refused, naming its field.
    pub(super) fn throttle_config(
        &self,
    ) -> Result<Option<crate::layer::ThrottleConfig>, ConfigError> {
        let Some(throttle) = &self.throttle else {
            return Ok(None);
        };
        let at_least_one = |value: u32, field: &str| {
            std::num::NonZeroU32::new(value).ok_or_else(|| {
                ConfigError::invalid(self.at("throttle", field), "must be at least 1")
            })
        };
        Ok(Some(crate::layer::ThrottleConfig::per_minute(
            at_least_one(throttle.failed_auth_per_minute, "failed_auth_per_minute")?,
            at_least_one(throttle.burst, "burst")?,
        )))
    }
}
