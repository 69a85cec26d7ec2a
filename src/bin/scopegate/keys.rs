//! `scopegate keys issue|list|revoke|rotate` on a SQLite key store.

use std::sync::Arc;
use std::time::SystemTime;

use scopegate::credential::api_key::{
    IssuedKey, KeyFormat, KeyId, KeyInfo, KeyIssuer, KeyStore, NewKey, OpenMode, Pepper, Peppers,
    SqliteKeyStore,
};
use scopegate::policy::ScopeSet;
use scopegate::{Attributes, SystemClock};
use serde_json::{Value, json};

use crate::token::parse_cidrs;
use crate::{Failure, duration};

/// Where the keys live, and how they are hashed.
#[derive(Debug, clap::Args)]
pub(crate) struct StoreArgs {
    /// Key store URL: sqlite://PATH (created if missing).
    #[arg(long, value_name = "URL")]
    store: String,
    /// Environment variable holding the pepper (at least 32 bytes).
    #[arg(long, value_name = "NAME", default_value = "SCOPEGATE_PEPPER")]
    pepper_env: String,
    /// The pepper's version, recorded beside each new digest (the gate file's `pepper_version`).
    #[arg(long, value_name = "N", default_value_t = 1)]
    pepper_version: u32,
    /// Key prefix.
    #[arg(long, default_value = "sg")]
    prefix: String,
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
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
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
    /// Issue a replacement for an active key; the old key keeps working for the grace period.
    Rotate {
        #[command(flatten)]
        store: StoreArgs,
        /// The key's id.
        id: String,
        /// How long the old key keeps working (default 0: it stops now).
        #[arg(long, value_name = "DURATION")]
        grace: Option<String>,
        /// Lifetime of the new key; default: the old key's lifetime, counted from now.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

async fn issuer(args: &StoreArgs) -> Result<KeyIssuer, Failure> {
    let format =
        KeyFormat::new(&args.prefix).map_err(|e| Failure::usage(format!("--prefix: {e}")))?;
    let pepper = read_pepper(&args.pepper_env, args.pepper_version)?;
    let store = SqliteKeyStore::open(&args.store, OpenMode::CreateIfMissing)
        .await
        .map_err(|e| Failure::usage(format!("--store: {e}")))?;
    let store: Arc<dyn KeyStore> = Arc::new(store);
    Ok(KeyIssuer::new(
        store,
        format,
        Peppers::single(pepper),
        Arc::new(SystemClock),
    ))
}

pub(crate) fn read_pepper(var: &str, version: u32) -> Result<Pepper, Failure> {
    Pepper::from_env(var, version).map_err(|e| Failure::usage(e.to_string()))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn time_or_null(t: Option<SystemTime>) -> Value {
    t.map_or(Value::Null, |t| Value::String(rfc3339(t)))
}

fn key_json(key: &IssuedKey) -> Result<Value, Failure> {
    let info = key.info();
    let secret = key
        .key()
        .expose_str()
        .ok_or_else(|| Failure::usage("the issued key is not text"))?;
    Ok(json!({
        "id": info.id.as_str(),
        "key": secret,
        "name": info.name,
        "scopes": info.scopes,
        "allow_ips": info.allow_ips.as_ref().map_or_else(Vec::new, |s| s.networks().iter().map(ToString::to_string).collect()),
        "attrs": info.attributes,
        "expires_at": time_or_null(info.expires_at),
    }))
}

fn info_json(info: &KeyInfo, pepper_version: u32, now: SystemTime) -> Value {
    json!({
        "id": info.id.as_str(),
        "name": info.name,
        "scopes": info.scopes,
        "allow_ips": info.allow_ips.as_ref().map_or_else(Vec::new, |s| s.networks().iter().map(ToString::to_string).collect()),
        "attrs": info.attributes,
        "created_at": rfc3339(info.created_at),
        "expires_at": time_or_null(info.expires_at),
        "revoked_at": time_or_null(info.revoked_at),
        "replaces": info.replaces.as_ref().map(KeyId::as_str),
        "status": info.status(now).as_str(),
        "pepper_version": pepper_version,
    })
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
        println!(
            "expires_at: {}",
            info.expires_at.map_or_else(|| "never".to_owned(), rfc3339)
        );
        println!("key:        {}", value["key"].as_str().unwrap_or_default());
        println!("(the key is shown once and cannot be recovered: store it now)");
    }
    Ok(())
}

fn parse_attrs(attrs: &[String]) -> Result<Attributes, Failure> {
    let mut out = Attributes::new();
    for attr in attrs {
        let (k, v) = attr
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| Failure::usage(format!("--attr {attr:?}: expected KEY=VALUE")))?;
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(Failure::usage(format!(
                "--attr: the key {k:?} is given twice"
            )));
        }
    }
    Ok(out)
}

fn parse_id(id: &str) -> Result<KeyId, Failure> {
    id.parse::<KeyId>()
        .map_err(|e| Failure::usage(format!("ID {id:?}: {e}")))
}

fn optional_duration(
    flag: &str,
    value: Option<&String>,
    parse: fn(&str) -> Result<std::time::Duration, String>,
) -> Result<Option<std::time::Duration>, Failure> {
    value
        .map(|v| parse(v).map_err(|e| Failure::usage(format!("{flag}: {e}"))))
        .transpose()
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
            json,
        } => {
            let scopes =
                ScopeSet::parse(scopes).map_err(|e| Failure::usage(format!("--scope: {e}")))?;
            let allow_ips = parse_cidrs(allow_ips)?;
            let attrs = parse_attrs(attrs)?;
            let expires_in = optional_duration(
                "--expires-in",
                expires_in.as_ref(),
                duration::parse_positive,
            )?;
            let issuer = issuer(store).await?;
            let mut request = NewKey::new(name.clone(), scopes).attributes(attrs);
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
        KeysCommand::Revoke { store, id } => {
            let id = parse_id(id)?;
            let issuer = issuer(store).await?;
            issuer
                .revoke(id)
                .await
                .map_err(|e| Failure::usage(format!("keys revoke: {e}")))?;
            println!("revoked {}", id.as_str());
            Ok(())
        }
        KeysCommand::Rotate {
            store,
            id,
            grace,
            expires_in,
            json,
        } => {
            let id = parse_id(id)?;
            let grace =
                optional_duration("--grace", grace.as_ref(), duration::parse)?.unwrap_or_default();
            let expires_in = optional_duration(
                "--expires-in",
                expires_in.as_ref(),
                duration::parse_positive,
            )?;
            let issuer = issuer(store).await?;
            let key = issuer
                .rotate(id, grace, expires_in)
                .await
                .map_err(|e| Failure::usage(format!("keys rotate: {e}")))?;
            print_issued(&key, *json, Some(&id))
        }
    }
}
