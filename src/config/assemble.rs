//! Assembling a gate from a gate file: the peppers from the environment, the key store, the key sets. The file's
//! schema and its validation are in `file.rs`; nothing here parses the file again.

use super::file::GateFile;
#[cfg(feature = "jwt")]
use super::file::{JwtSection, KeySource, OneOrMany};
use crate::error::ConfigError;

impl GateFile {
    /// Builds the gate this file describes — policy, API keys (the store must exist; the pepper comes from the
    /// environment variable the file names), JWTs (the key set file must load), transport and throttle — as a
    /// builder, so that the caller can still choose the audit sink.
    ///
    /// `env` reads environment variables (pass `|name| std::env::var(name).ok()`); `clock` is the gate's clock.
    pub async fn gate(
        &self,
        env: impl Fn(&str) -> Option<String>,
        clock: impl crate::Clock + Clone,
    ) -> Result<crate::layer::ScopeGateBuilder, ConfigError> {
        let mut gate = crate::layer::ScopeGateLayer::builder(self.policy()?);
        let t = &self.transport;
        if !t.require_tls {
            gate = gate.danger_allow_plaintext();
        }
        gate = gate.trusted_proxies(t.trusted_proxies.iter().copied());
        if t.hsts_max_age > 0 {
            gate = gate.hsts_max_age(std::time::Duration::from_secs(t.hsts_max_age));
        }
        if let Some(throttle) = self.throttle_config()? {
            gate = gate.throttle(throttle);
        }
        if let Some(keys) = &self.api_keys {
            gate = gate
                .api_key_header(self.key_header(keys)?)
                .api_keys(self.api_key_verifier(&env, clock.clone()).await?);
        }
        #[cfg(feature = "jwt")]
        if let Some(jwt) = &self.jwt {
            gate = gate.jwt(self.jwt_authenticator(jwt, &clock)?);
        }
        #[cfg(not(feature = "jwt"))]
        let _ = clock;
        if let Some(resource) = &self.resource {
            let mut metadata = crate::layer::ProtectedResource::new(resource.uri.clone())
                .authorization_servers(resource.authorization_servers.clone());
            if let Some(scopes) = &resource.scopes_supported {
                metadata = metadata.scopes_supported(scopes.clone());
            }
            gate = gate.protected_resource(metadata);
        }
        if let Some(shadow) = self.shadow_policy() {
            gate = gate.shadow(shadow.clone());
        }
        Ok(gate)
    }

    /// The current pepper of `[api_keys]` (`pepper_env`, `pepper_version`), read from the environment.
    pub fn pepper(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<crate::credential::api_key::Pepper, ConfigError> {
        let (var, version) = self
            .api_keys
            .as_ref()
            .map_or((crate::credential::api_key::DEFAULT_PEPPER_ENV, 1), |k| {
                (k.pepper_env.as_str(), k.pepper_version)
            });
        pepper_from(var, version, env)
            .map_err(|problem| ConfigError::invalid(self.at("api_keys", "pepper_env"), problem))
    }

    /// Every pepper of `[api_keys]`: the current one and `older_peppers`, each read from the environment.
    pub fn peppers(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<crate::credential::api_key::Peppers, ConfigError> {
        let current = self.pepper(&env)?;
        let older = self
            .api_keys
            .as_ref()
            .map_or(&[][..], |k| &k.older_peppers[..]);
        let older = older
            .iter()
            .map(|p| pepper_from(&p.env, p.version, &env))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|problem| {
                ConfigError::invalid(self.at("api_keys", "older_peppers"), problem)
            })?;
        crate::credential::api_key::Peppers::new(current, older).map_err(|e| {
            ConfigError::invalid(
                self.at("api_keys", "older_peppers"),
                format!("{e} (pepper_version counts as one)"),
            )
        })
    }

    async fn api_key_verifier(
        &self,
        env: &impl Fn(&str) -> Option<String>,
        clock: impl crate::Clock,
    ) -> Result<crate::credential::api_key::ApiKeyVerifier, ConfigError> {
        use crate::credential::api_key::{ApiKeyVerifier, CacheConfig, KeyCache, KeyFormat};
        let section = self
            .api_keys
            .as_ref()
            .ok_or_else(|| ConfigError::invalid(self.at("api_keys", "store"), "missing"))?;
        let format = KeyFormat::new(&section.prefix)
            .map_err(|e| ConfigError::invalid(self.at("api_keys", "prefix"), e.to_string()))?;
        let peppers = self.peppers(env)?;
        let url = self.store_url().unwrap_or_else(|| Ok(String::new()))?;
        let store = open_existing_store(&url)
            .await
            .map_err(|problem| ConfigError::invalid(self.at("api_keys", "store"), problem))?;
        let ttl = std::time::Duration::from_secs(section.cache_ttl_seconds);
        let cache = std::sync::Arc::new(KeyCache::new(store, CacheConfig::default().ttl(ttl)));
        Ok(ApiKeyVerifier::builder(peppers, cache)
            .format(format)
            .clock(clock)
            .last_used(Some(std::time::Duration::from_secs(
                section.last_used_seconds,
            )))
            .build())
    }

    /// `[jwt]` (one issuer) or its `[[jwt.issuers]]` entries, each with its own key set; `[resource] uri` is an
    /// accepted audience of every entry (RFC 8707).
    #[cfg(feature = "jwt")]
    fn jwt_authenticator(
        &self,
        section: &JwtSection,
        clock: &(impl crate::Clock + Clone),
    ) -> Result<crate::credential::jwt::JwtAuthenticator, ConfigError> {
        use crate::credential::jwt::JwtAuthenticator;
        // One HTTPS fetcher (one connection pool) for every entry that fetches, made when the first needs it.
        #[cfg(feature = "jwks-https")]
        let mut fetcher = None;
        let mut authenticators = Vec::new();
        for (table, entry) in section.entries() {
            let in_file = |e: ConfigError| {
                let e = e.in_section(&table);
                match self.source() {
                    Some(file) => e.in_file(file),
                    None => e,
                }
            };
            let builder = self
                .jwt_entry(section, entry, clock.clone())
                .map_err(in_file)?;
            let builder = match entry.key_source() {
                Ok(Some(KeySource::File(path))) => builder.jwks_file(self.resolve(path)),
                #[cfg(feature = "jwks-https")]
                Ok(Some(KeySource::Url(url))) => {
                    builder.jwks_url(self.shared_fetcher(section, &mut fetcher)?, url)
                }
                #[cfg(feature = "jwks-https")]
                Ok(Some(KeySource::Discovery)) => {
                    builder.discovery(self.shared_fetcher(section, &mut fetcher)?)
                }
                #[cfg(not(feature = "jwks-https"))]
                Ok(Some(KeySource::Url(_) | KeySource::Discovery)) => {
                    return Err(in_file(ConfigError::invalid(
                        self.at("jwt", "jwks_url"),
                        "this build cannot fetch key sets (enable the scopegate crate's `jwks-https` feature)",
                    )));
                }
                // `GateFile::validate` made sure every entry has exactly one.
                Ok(None) | Err(_) => {
                    return Err(in_file(ConfigError::invalid(
                        self.at("jwt", "jwks_file"),
                        "set one of jwks_file, jwks_url or discovery = true",
                    )));
                }
            };
            authenticators.push(builder.build().map_err(in_file)?);
        }
        if section.issuers.is_empty() {
            return authenticators
                .pop()
                .ok_or_else(|| ConfigError::invalid(self.at("jwt", "issuer"), "no issuer entry"));
        }
        JwtAuthenticator::by_issuer(authenticators).map_err(|e| match self.source() {
            Some(file) => e.in_file(file),
            None => e,
        })
    }

    /// One entry's builder, without its key set: the entry's values, else `[jwt]`'s, else the defaults.
    #[cfg(feature = "jwt")]
    fn jwt_entry(
        &self,
        defaults: &JwtSection,
        entry: &JwtSection,
        clock: impl crate::Clock,
    ) -> Result<crate::credential::jwt::JwtAuthenticatorBuilder, ConfigError> {
        use crate::credential::jwt::{Algorithm, JwtAuthenticator};
        let names = entry
            .algorithms
            .as_ref()
            .or(defaults.algorithms.as_ref())
            .map_or(&[][..], Vec::as_slice);
        let mut algorithms = Vec::with_capacity(names.len());
        for name in names {
            let alg = name.parse::<Algorithm>().map_err(|_| {
                ConfigError::invalid(
                    self.at("jwt", "algorithms"),
                    format!("{name:?} is not a JWS algorithm name such as \"ES256\""),
                )
            })?;
            algorithms.push(alg);
        }
        let leeway = entry.leeway_seconds.or(defaults.leeway_seconds);
        let mut builder = JwtAuthenticator::builder()
            .algorithms(algorithms)
            .attr_claims(
                entry
                    .attr_claims
                    .as_ref()
                    .or(defaults.attr_claims.as_ref())
                    .cloned()
                    .unwrap_or_default(),
            )
            .clock(clock);
        if let Some(seconds) = leeway {
            builder = builder.leeway(std::time::Duration::from_secs(seconds));
        }
        if let Some(claim) = entry.scope_claim.as_ref().or(defaults.scope_claim.as_ref()) {
            builder = builder.scope_claim(claim.clone());
        }
        for issuer in entry.issuer.iter().flat_map(OneOrMany::to_vec) {
            builder = builder.issuer(issuer);
        }
        let audiences = entry.audience.as_ref().or(defaults.audience.as_ref());
        for audience in audiences.iter().flat_map(|a| a.to_vec()) {
            builder = builder.audience(audience);
        }
        if let Some(resource) = &self.resource {
            builder = builder.audience(resource.uri.clone());
        }
        if let Some(claim) = entry
            .allow_ips_claim
            .as_ref()
            .or(defaults.allow_ips_claim.as_ref())
        {
            builder = builder.allow_ips_claim(claim.clone());
        }
        if let Some(typ) = entry.typ.as_ref().or(defaults.typ.as_ref()) {
            builder = builder.required_typ(typ.clone());
        }
        if let Some(fetch) = &defaults.fetch {
            builder = builder.key_refresh(
                crate::credential::jwt::KeyRefresh::new()
                    .interval(std::time::Duration::from_secs(fetch.refresh_seconds))
                    .unknown_kid_cooldown(std::time::Duration::from_secs(
                        fetch.unknown_kid_cooldown_seconds,
                    ))
                    .max_stale(std::time::Duration::from_secs(fetch.max_stale_seconds)),
            );
        }
        Ok(builder)
    }

    /// The fetcher in `slot`, made now if it is the first one needed.
    #[cfg(feature = "jwks-https")]
    fn shared_fetcher<'s>(
        &self,
        section: &JwtSection,
        slot: &'s mut Option<crate::credential::jwt::HttpsFetcher>,
    ) -> Result<&'s crate::credential::jwt::HttpsFetcher, ConfigError> {
        let fetcher = match slot.take() {
            Some(fetcher) => fetcher,
            None => self.fetcher(section)?,
        };
        Ok(slot.insert(fetcher))
    }

    /// The HTTPS fetcher of `[jwt.fetch]` (the defaults when the table is absent).
    #[cfg(feature = "jwks-https")]
    fn fetcher(
        &self,
        section: &JwtSection,
    ) -> Result<crate::credential::jwt::HttpsFetcher, ConfigError> {
        let defaults = super::file::FetchSection::default();
        let fetch = section.fetch.as_ref().unwrap_or(&defaults);
        let mut builder = crate::credential::jwt::HttpsFetcher::builder()
            .timeout(std::time::Duration::from_secs(fetch.timeout_seconds))
            .max_bytes(usize::try_from(fetch.max_bytes).unwrap_or(usize::MAX));
        if let Some(ca) = &fetch.ca_file {
            builder = builder.ca_file(self.resolve(ca));
        }
        builder.build().map_err(|e| {
            let field = match &e {
                crate::credential::jwt::FetchError::Setting(why) if why.contains("max_bytes") => {
                    "max_bytes"
                }
                crate::credential::jwt::FetchError::Setting(why) if why.contains("timeout") => {
                    "timeout_seconds"
                }
                _ => "ca_file",
            };
            ConfigError::invalid(self.at("jwt.fetch", field), e.to_string())
        })
    }
}

fn pepper_from(
    var: &str,
    version: u32,
    env: impl Fn(&str) -> Option<String>,
) -> Result<crate::credential::api_key::Pepper, String> {
    use crate::credential::api_key::{MIN_PEPPER_LEN, Pepper};
    let value = env(var)
        .ok_or_else(|| format!("the environment variable {var} (the pepper) is not set"))?;
    if value.len() < MIN_PEPPER_LEN {
        return Err(format!(
            "the environment variable {var} (the pepper) is shorter than {MIN_PEPPER_LEN} bytes"
        ));
    }
    Pepper::new(version, value.into_bytes()).map_err(|e| e.to_string())
}

async fn open_existing_store(
    url: &str,
) -> Result<std::sync::Arc<dyn crate::credential::api_key::KeyStore>, String> {
    use crate::credential::api_key::{StoreAccess, open_store};
    open_store(url, StoreAccess::Gate)
        .await
        .map_err(|e| e.to_string())
}
