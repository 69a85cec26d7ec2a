//! What the SQL key stores share: one schema (the same migration text runs on `SQLite` and PostgreSQL), the row's
//! columns, and the checks that turn a stored row back into a record. Only binding and placeholders differ.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use sqlx::migrate::Migrator;
use sqlx::{ColumnIndex, Decode, Row, Type};

use super::format::KeyId;
use super::hash::KeyHash;
use super::record::{KeyInfo, KeyRecord};
use super::store::StoreError;
use crate::Attributes;
use crate::clock::unix_secs;
use crate::network::{Cidr, CidrSet};
use crate::policy::ScopeSet;

/// The schema migrations, embedded at compile time; the same text runs on `SQLite` and PostgreSQL.
pub(super) static MIGRATOR: Migrator = sqlx::migrate!("src/credential/api_key/migrations");

/// The first migration of this version that `applied` lacks, described, if any.
pub(super) fn missing_migration(applied: &HashSet<i64>) -> Option<String> {
    MIGRATOR
        .iter()
        .find(|m| !applied.contains(&m.version))
        .map(|m| format!("migration {} ({}) is not applied", m.version, m.description))
}

/// Every column, in the order of [`RowValues`].
pub(super) const COLUMNS: &str = "id, name, scopes, allow_ips, attributes, pepper_version, key_hash, \
                                  created_at, expires_at, revoked_at, replaces";

pub(super) fn backend(error: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Backend(Box::new(error))
}

fn hex(bytes: &[u8; 32]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

/// A row as stored: text, JSON text and whole Unix seconds.
pub(super) struct RawRow {
    id: String,
    name: String,
    scopes: String,
    allow_ips: Option<String>,
    attributes: String,
    pepper_version: i64,
    key_hash: String,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    replaces: Option<String>,
}

impl RawRow {
    /// Reads the columns of any sqlx row whose database decodes text and 64-bit integers.
    pub(super) fn read<'r, R>(row: &'r R) -> Result<Self, sqlx::Error>
    where
        R: Row,
        &'static str: ColumnIndex<R>,
        String: Decode<'r, R::Database> + Type<R::Database>,
        i64: Decode<'r, R::Database> + Type<R::Database>,
    {
        Ok(RawRow {
            id: row.try_get("id")?,
            name: row.try_get("name")?,
            scopes: row.try_get("scopes")?,
            allow_ips: row.try_get("allow_ips")?,
            attributes: row.try_get("attributes")?,
            pepper_version: row.try_get("pepper_version")?,
            key_hash: row.try_get("key_hash")?,
            created_at: row.try_get("created_at")?,
            expires_at: row.try_get("expires_at")?,
            revoked_at: row.try_get("revoked_at")?,
            replaces: row.try_get("replaces")?,
        })
    }

    /// The record, every field checked as when it was issued: a row changed behind the issuer's back is corrupt
    /// (the gate answers 503), never a wider grant.
    pub(super) fn into_record(self) -> Result<KeyRecord, StoreError> {
        let corrupt = |detail: &str| StoreError::Corrupt {
            id: self.id.chars().take(40).collect(),
            detail: detail.to_owned(),
        };
        let time = |secs: i64| {
            u64::try_from(secs)
                .map(|s| SystemTime::UNIX_EPOCH + Duration::from_secs(s))
                .map_err(|_| corrupt("a time before 1970"))
        };
        let id: KeyId = self.id.parse().map_err(|_| corrupt("bad id"))?;
        let scopes: Vec<String> = serde_json::from_str(&self.scopes)
            .map_err(|_| corrupt("scopes are not a JSON array of strings"))?;
        // A bare `*` stored behind the issuer's back is refused here: the record is unusable, the gate answers 503.
        let scopes = ScopeSet::parse(&scopes).map_err(|_| corrupt("invalid scope"))?;
        let allow_ips = match &self.allow_ips {
            None => None,
            Some(text) => {
                let list: Vec<String> = serde_json::from_str(text)
                    .map_err(|_| corrupt("allow_ips is not a JSON array of strings"))?;
                Some(
                    list.iter()
                        .map(|s| s.parse::<Cidr>())
                        .collect::<Result<CidrSet, _>>()
                        .map_err(|_| corrupt("invalid network in allow_ips"))?,
                )
            }
        };
        let attributes: Attributes = serde_json::from_str(&self.attributes)
            .map_err(|_| corrupt("attributes are not a JSON object of strings"))?;
        let pepper_version = u32::try_from(self.pepper_version)
            .map_err(|_| corrupt("pepper version out of range"))?;
        let digest =
            unhex(&self.key_hash).ok_or_else(|| corrupt("key_hash is not 64 hex digits"))?;
        let replaces = match &self.replaces {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| corrupt("bad replaces id"))?),
        };
        Ok(KeyRecord {
            info: KeyInfo {
                id,
                name: self.name.clone(),
                scopes,
                allow_ips,
                attributes,
                created_at: time(self.created_at)?,
                expires_at: self.expires_at.map(time).transpose()?,
                revoked_at: self.revoked_at.map(time).transpose()?,
                replaces,
            },
            hash: KeyHash::from_parts(pepper_version, digest),
        })
    }
}

/// A record's column values, in the order of [`COLUMNS`].
pub(super) struct RowValues<'a> {
    pub(super) id: &'a str,
    pub(super) name: &'a str,
    pub(super) scopes: String,
    pub(super) allow_ips: Option<String>,
    pub(super) attributes: String,
    pub(super) pepper_version: i64,
    pub(super) key_hash: String,
    pub(super) created_at: i64,
    pub(super) expires_at: Option<i64>,
    pub(super) revoked_at: Option<i64>,
    pub(super) replaces: Option<&'a str>,
}

impl<'a> RowValues<'a> {
    pub(super) fn of(record: &'a KeyRecord) -> Result<Self, StoreError> {
        let info = &record.info;
        let scopes: Vec<&str> = info
            .scopes
            .iter()
            .map(crate::policy::Scope::as_str)
            .collect();
        let allow_ips = match &info.allow_ips {
            None => None,
            Some(set) => {
                let list: Vec<String> = set.networks().iter().map(ToString::to_string).collect();
                Some(serde_json::to_string(&list).map_err(backend)?)
            }
        };
        Ok(RowValues {
            id: info.id.as_str(),
            name: &info.name,
            scopes: serde_json::to_string(&scopes).map_err(backend)?,
            allow_ips,
            attributes: serde_json::to_string(&info.attributes).map_err(backend)?,
            pepper_version: i64::from(record.hash.pepper_version()),
            key_hash: hex(record.hash.digest()),
            created_at: unix_secs(info.created_at),
            expires_at: info.expires_at.map(unix_secs),
            revoked_at: info.revoked_at.map(unix_secs),
            replaces: info.replaces.as_ref().map(KeyId::as_str),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_is_strict() {
        let bytes = [0x00, 0x7f, 0xff, 0x10].repeat(8);
        let digest: [u8; 32] = bytes.try_into().unwrap_or([0; 32]);
        assert_eq!(unhex(&hex(&digest)), Some(digest));
        assert_eq!(unhex(&"A".repeat(64)), None);
        assert_eq!(unhex(&"0".repeat(63)), None);
        assert_eq!(unhex(&"g".repeat(64)), None);
    }
}
