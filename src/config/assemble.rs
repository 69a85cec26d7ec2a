//! Assembling a gate from a gate file: the peppers from the environment, the key store, the key sets. The file's
//! schema and its validation are in `file.rs`; nothing here parses the file again.

use super::file::GateFile;
#[cfg(feature = "jwt")]
use super::file::JwtSection;
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
            gate = gate.jwt(self.jwt_authenticator(jwt, clock)?);
        }
        #[cfg(not(feature = "jwt"))]
        let _ = clock;
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
        let cache = std::sync::Arc::new(KeyCache::new(store, CacheConfig::default()));
        Ok(ApiKeyVerifier::builder(peppers, cache)
            .format(format)
            .clock(clock)
            .build())
    }

    #[cfg(feature = "jwt")]
    fn jwt_authenticator(
        &self,
        section: &JwtSection,
        clock: impl crate::Clock,
    ) -> Result<crate::credential::jwt::JwtAuthenticator, ConfigError> {
        use crate::credential::jwt::{Algorithm, JwtAuthenticator};
        let mut algorithms = Vec::with_capacity(section.algorithms.len());
        for name in &section.algorithms {
            let alg = name.parse::<Algorithm>().map_err(|_| {
                ConfigError::invalid(
                    self.at("jwt", "algorithms"),
                    format!("{name:?} is not a JWS algorithm name such as \"ES256\""),
                )
            })?;
            algorithms.push(alg);
        }
        let mut builder = JwtAuthenticator::builder()
            .algorithms(algorithms)
            .jwks_file(self.resolve(&section.jwks_file))
            .leeway(std::time::Duration::from_secs(section.leeway_seconds))
            .scope_claim(section.scope_claim.clone())
            .attr_claims(section.attr_claims.clone())
            .clock(clock);
        for issuer in section.issuer.to_vec() {
            builder = builder.issuer(issuer);
        }
        for audience in section.audience.to_vec() {
            builder = builder.audience(audience);
        }
        if let Some(claim) = &section.allow_ips_claim {
            builder = builder.allow_ips_claim(claim.clone());
        }
        if let Some(typ) = &section.typ {
            builder = builder.required_typ(typ.clone());
        }
        // The builder's error names `[jwt]` and the field; the file is added here.
        builder.build().map_err(|e| match self.source() {
            Some(file) => e.in_file(file),
            None => e,
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

#[cfg(feature = "sqlite")]
async fn open_existing_store(
    url: &str,
) -> Result<std::sync::Arc<dyn crate::credential::api_key::KeyStore>, String> {
    use crate::credential::api_key::{OpenMode, SqliteKeyStore};
    let store = SqliteKeyStore::open(url, OpenMode::MustExist)
        .await
        .map_err(|e| e.to_string())?;
    Ok(std::sync::Arc::new(store))
}

#[cfg(not(feature = "sqlite"))]
#[allow(clippy::unused_async)] // the same signature as the SQLite build's
async fn open_existing_store(
    url: &str,
) -> Result<std::sync::Arc<dyn crate::credential::api_key::KeyStore>, String> {
    Err(format!(
        "{url:?}: this build has no SQLite support (enable the `sqlite` feature)"
    ))
}
