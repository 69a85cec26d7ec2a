//! `scopegate keys issue|list|revoke|disable|enable|rotate|migrate` on a SQLite or PostgreSQL key store.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use scopegate::SystemClock;
use scopegate::credential::api_key::{
    DEFAULT_PEPPER_ENV, DEFAULT_PREFIX, IssuedKey, KeyFormat, KeyId, KeyInfo, KeyIssuer, KeyStatus,
    NewKey, Pepper, Peppers, RateLimit, StoreAccess, open_store,
};
use serde_json::{Value, json};

use crate::{Failure, env, load_gate_file, values};

/// Where the keys live, and how they are hashed: from flags, or from a gate file's `[api_keys]` (a flag given as
/// well overrides the file).
#[derive(Debug, clap::Args)]
pub(crate) struct StoreArgs {
    /// Key store URL: sqlite://PATH (created if missing) or postgres://USER@HOST[:PORT]/DB (migrated with
    /// `keys migrate`). Required without --config.
    #[arg(long, value_name = "URL", required_unless_present = "config")]
    store: Option<String>,
    /// Gate file whose [api_keys] section gives the store, pepper_env, pepper_version, the older peppers and
    /// prefix, so that issuance matches what `check` and `serve` verify.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Environment variable holding the pepper (at least 32 bytes). Default: SCOPEGATE_PEPPER.
    #[arg(long, value_name = "NAME")]
    pepper_env: Option<String>,
    /// The pepper's version, recorded beside each new digest. Default: 1.
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pepper_version: Option<u32>,
    /// Key prefix. Default: sg.
    #[arg(long)]
    prefix: Option<String>,
}

/// `keys` subcommands.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum KeysCommand {
    /// Issue a key; the key is printed once and never again.
    Issue {
        #[command(flatten)]
        store: StoreArgs,
        /// A human label.
        #[arg(long)]
        name: String,
        /// Granted scope (repeat for several).
        #[arg(long = "scope", value_name = "S", required = true)]
        scopes: Vec<String>,
        /// Network the key may be used from (repeat for several).
        #[arg(long = "allow-ip", value_name = "CIDR")]
        allow_ips: Vec<String>,
        /// Attribute, e.g. tenant=acme (repeat for several).
        #[arg(long = "attr", value_name = "KEY=VALUE")]
        attrs: Vec<String>,
        /// Lifetime (90s, 15m, 12h, 30d); without it the key does not expire.
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        expires_in: Option<String>,
        /// At most N allowed requests per UNIT (s, m or h), e.g. 100/m.
        #[arg(long, value_name = "N/UNIT", allow_hyphen_values = true)]
        rate_limit: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// List keys (never secrets or hashes).
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a key, for good.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        /// The key's id.
        id: String,
    },
    /// Disable a key: refused (disabled_credential) until enabled again.
    Disable {
        #[command(flatten)]
        store: StoreArgs,
        /// The key's id.
        id: String,
    },
    /// Enable a disabled key (a revoked key stays revoked).
    Enable {
        #[command(flatten)]
        store: StoreArgs,
        /// The key's id.
        id: String,
    },
    /// Create or upgrade the key store's schema (running it again changes nothing).
    Migrate {
        /// Key store URL: sqlite://PATH or postgres://USER@HOST[:PORT]/DB.
        #[arg(long, value_name = "URL")]
        store: String,
    },
    /// Issue a replacement for an active key; the old key keeps working for the grace period.
    Rotate {
        #[command(flatten)]
        store: StoreArgs,
        /// The key's id.
        id: String,
        /// How long the old key keeps working (default 0: it stops now).
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        grace: Option<String>,
        /// Lifetime of the new key; default: the old key's lifetime, counted from now.
        #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
        expires_in: Option<String>,
        /// The new key's rate limit, N/UNIT (s, m or h); default: the old key's.
        #[arg(long, value_name = "N/UNIT", allow_hyphen_values = true)]
        rate_limit: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

async fn issuer(args: &StoreArgs) -> Result<KeyIssuer, Failure> {
    let file = match &args.config {
        Some(path) => {
            let gate = load_gate_file(path)?;
            if gate.api_keys.is_none() {
                return Err(Failure::usage(format!(
                    "--config {}: the file has no [api_keys] section",
                    path.display()
                )));
            }
            Some(gate)
        }
        None => None,
    };
    let keys = file.as_ref().and_then(|g| g.api_keys.as_ref());
    let prefix = args
        .prefix
        .as_deref()
        .or(keys.map(|k| k.prefix.as_str()))
        .unwrap_or(DEFAULT_PREFIX);
    let format = KeyFormat::new(prefix).map_err(|e| Failure::usage(format!("prefix: {e}")))?;
    let peppers = if let (Some(gate), None, None) = (&file, &args.pepper_env, args.pepper_version) {
        // The gate file's peppers, current and older, exactly as `check` and `serve` read them.
        gate.peppers(env)
            .map_err(|e| Failure::usage(e.to_string()))?
    } else {
        let var = args
            .pepper_env
            .as_deref()
            .or(keys.map(|k| k.pepper_env.as_str()))
            .unwrap_or(DEFAULT_PEPPER_ENV);
        let version = args
            .pepper_version
            .or(keys.map(|k| k.pepper_version))
            .unwrap_or(1);
        Peppers::single(Pepper::from_env(var, version).map_err(|e| Failure::usage(e.to_string()))?)
    };
    let (url, from) = match (&args.store, &file, &args.config) {
        (Some(url), _, _) => (url.clone(), "--store".to_owned()),
        (None, Some(gate), Some(path)) => (
            gate.store_url()
                .unwrap_or_else(|| Ok(String::new()))
                .map_err(|e| Failure::usage(e.to_string()))?,
            format!("{}: [api_keys] store", path.display()),
        ),
        _ => return Err(Failure::usage("--store or --config is required")),
    };
    let store = open_store(&url, StoreAccess::Manage)
        .await
        .map_err(|e| Failure::usage(format!("{from}: {e}")))?;
    Ok(KeyIssuer::new(
        store,
        format,
        peppers,
        Arc::new(SystemClock),
    ))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn time_or_null(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

/// The fields `keys issue --json` and `keys list --json` share.
fn shared_json(info: &KeyInfo) -> Value {
    json!({
        "id": info.id.as_str(),
        "name": info.name,
        "scopes": info.scopes,
        "allow_ips": info.allow_ips.as_ref().map_or_else(Vec::new, |s| s.networks().iter().map(ToString::to_string).collect()),
        "attrs": info.attributes,
        "expires_at": time_or_null(info.expires_at),
        "rate_limit": info.rate_limit.map(|r| r.to_string()),
    })
}

/// The status as the contract names it: `active` (a rotated key in its grace is still active; its `revoked_at`
/// says until when), `disabled`, `revoked` or `expired`.
fn contract_status(info: &KeyInfo, now: SystemTime) -> &'static str {
    match info.status(now) {
        KeyStatus::Retiring { .. } => "active",
        status => status.as_str(),
    }
}

fn key_json(key: &IssuedKey) -> Result<Value, Failure> {
    let secret = key
        .key()
        .expose_str()
        .ok_or_else(|| Failure::usage("the issued key is not text"))?;
    let mut value = shared_json(key.info());
    value["key"] = Value::from(secret);
    Ok(value)
}

fn info_json(info: &KeyInfo, pepper_version: u32, now: SystemTime) -> Value {
    let mut value = shared_json(info);
    value["created_at"] = Value::from(rfc3339(info.created_at));
    value["revoked_at"] = time_or_null(info.revoked_at);
    value["replaces"] = info.replaces.as_ref().map(KeyId::as_str).into();
    value["status"] = Value::from(contract_status(info, now));
    value["disabled_at"] = time_or_null(info.disabled_at);
    value["last_used_at"] = time_or_null(info.last_used_at);
    value["pepper_version"] = Value::from(pepper_version);
    value
}

fn print_issued(key: &IssuedKey, json_out: bool, replaces: Option<&KeyId>) -> Result<(), Failure> {
    let mut value = key_json(key)?;
    if let (Some(old), Some(object)) = (replaces, value.as_object_mut()) {
        object.insert(
            "replaces".to_owned(),
            Value::String(old.as_str().to_owned()),
        );
    }
    if json_out {
        println!("{value}");
    } else {
        let info = key.info();
        println!("id:         {}", info.id.as_str());
        println!("name:       {}", info.name);
        println!("scopes:     {}", info.scopes);
        if let Some(old) = replaces {
            println!("replaces:   {}", old.as_str());
        }
        if let Some(limit) = info.rate_limit {
            println!("rate_limit: {limit}");
        }
        println!(
            "expires_at: {}",
            info.expires_at.map_or_else(|| "never".to_owned(), rfc3339)
        );
        println!("key:        {}", value["key"].as_str().unwrap_or_default());
        println!("(the key is shown once and cannot be recovered: store it now)");
    }
    Ok(())
}

fn parse_id(id: &str) -> Result<KeyId, Failure> {
    id.parse::<KeyId>()
        .map_err(|e| Failure::usage(format!("ID {id:?}: {e}")))
}

fn rate_limit(value: Option<&String>) -> Result<Option<RateLimit>, Failure> {
    value
        .map(|v| {
            v.parse::<RateLimit>()
                .map_err(|e| Failure::usage(format!("--rate-limit: {e}")))
        })
        .transpose()
}

fn optional_duration(
    flag: &str,
    value: Option<&String>,
    parse: fn(&str, &str) -> Result<std::time::Duration, String>,
) -> Result<Option<std::time::Duration>, Failure> {
    value
        .map(|v| parse(flag, v).map_err(Failure::usage))
        .transpose()
}

/// What `keys revoke|disable|enable` do to a key.
#[derive(Clone, Copy)]
enum Change {
    Revoke,
    Disable,
    Enable,
}

async fn change_status(store: &StoreArgs, id: &str, change: Change) -> Result<(), Failure> {
    let id = parse_id(id)?;
    let issuer = issuer(store).await?;
    let (command, done, result) = match change {
        Change::Revoke => ("revoke", "revoked", issuer.revoke(id).await),
        Change::Disable => ("disable", "disabled", issuer.disable(id).await),
        Change::Enable => ("enable", "enabled", issuer.enable(id).await),
    };
    result.map_err(|e| Failure::usage(format!("keys {command}: {e}")))?;
    println!("{done} {}", id.as_str());
    Ok(())
}

pub(crate) async fn run(command: &KeysCommand) -> Result<(), Failure> {
    match command {
        KeysCommand::Issue {
            store,
            name,
            scopes,
            allow_ips,
            attrs,
            expires_in,
            rate_limit: limit,
            json,
        } => {
            let name = values::text("--name", name).map_err(Failure::usage)?;
            let scopes = values::scopes(scopes).map_err(Failure::usage)?;
            let allow_ips = values::cidrs(allow_ips).map_err(Failure::usage)?;
            let attrs = values::attrs(attrs).map_err(Failure::usage)?;
            let expires_in = optional_duration(
                "--expires-in",
                expires_in.as_ref(),
                values::positive_duration,
            )?;
            let limit = rate_limit(limit.as_ref())?;
            let issuer = issuer(store).await?;
            let mut request = NewKey::new(name, scopes).attributes(attrs);
            if let Some(limit) = limit {
                request = request.rate_limit(limit);
            }
            if let Some(set) = allow_ips {
                request = request.allow_ips(set);
            }
            if let Some(lifetime) = expires_in {
                request = request.expires_in(lifetime);
            }
            let key = issuer
                .issue(request)
                .await
                .map_err(|e| Failure::usage(format!("keys issue: {e}")))?;
            print_issued(&key, *json, None)
        }
        KeysCommand::List { store, json } => {
            let issuer = issuer(store).await?;
            let keys = issuer
                .list_with_pepper_versions()
                .await
                .map_err(|e| Failure::usage(format!("keys list: {e}")))?;
            let now = SystemTime::now();
            if *json {
                let list: Vec<Value> = keys.iter().map(|(k, v)| info_json(k, *v, now)).collect();
                println!("{}", Value::Array(list));
            } else {
                for (k, version) in &keys {
                    println!(
                        "{}  {:<8}  {:<24}  pepper v{version}  {}",
                        k.id.as_str(),
                        k.status(now).as_str(),
                        k.name,
                        k.scopes
                    );
                }
            }
            Ok(())
        }
        KeysCommand::Migrate { store } => {
            open_store(store, StoreAccess::Migrate)
                .await
                .map_err(|e| Failure::usage(format!("--store: {e}")))?;
            println!("the key store's schema is current");
            Ok(())
        }
        KeysCommand::Revoke { store, id } => change_status(store, id, Change::Revoke).await,
        KeysCommand::Disable { store, id } => change_status(store, id, Change::Disable).await,
        KeysCommand::Enable { store, id } => change_status(store, id, Change::Enable).await,
        KeysCommand::Rotate {
            store,
            id,
            grace,
            expires_in,
            rate_limit: limit,
            json,
        } => {
            let id = parse_id(id)?;
            let limit = rate_limit(limit.as_ref())?;
            let grace =
                optional_duration("--grace", grace.as_ref(), values::duration)?.unwrap_or_default();
            let expires_in = optional_duration(
                "--expires-in",
                expires_in.as_ref(),
                values::positive_duration,
            )?;
            let issuer = issuer(store).await?;
            let key = issuer
                .rotate_with(id, grace, expires_in, limit)
                .await
                .map_err(|e| Failure::usage(format!("keys rotate: {e}")))?;
            print_issued(&key, *json, Some(&id))
        }
    }
}
