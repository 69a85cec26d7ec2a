//! Strict JSON for JWT headers and payloads, and the typed reading of each claim.
//!
//! `serde_json` keeps the last of two members with the same name; another parser (the identity provider's, a
//! proxy's) may keep the first. A token whose meaning depends on the parser is refused: [`parse_object`] fails on
//! a duplicate member name at any depth.

use std::fmt;

use std::borrow::Cow;

use serde::de::{self, Deserialize, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::network::{Cidr, CidrSet};
use crate::policy::{Denial, ScopeSet};

/// A JSON value parsed with duplicate member names refused.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(de::Error::custom("duplicate member name"));
            }
            let Strict(v) = map.next_value()?;
            members.insert(name, v);
        }
        Ok(Value::Object(members))
    }
}

/// The members of a JSON object that the caller asked for; every other member was only checked (for duplicate
/// names at any depth), never kept.
pub(super) struct Object {
    members: Vec<(String, Value)>,
}

impl Object {
    /// A kept member.
    pub(super) fn get(&self, name: &str) -> Option<&Value> {
        self.members
            .iter()
            .find_map(|(n, v)| (n == name).then_some(v))
    }

    /// Whether a kept member is present.
    pub(super) fn contains_key(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

/// A member name, borrowed from the input when it holds no escape.
struct Name<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(v)))
            }
        }
        deserializer.deserialize_str(V)
    }
}

/// Any JSON value, discarded, with duplicate member names refused at any depth.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> Visitor<'de> for CheckedVisitor {
    type Value = Checked;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        let mut seen: Vec<Cow<'de, str>> = Vec::new();
        while let Some(Name(name)) = map.next_key()? {
            if seen.contains(&name) {
                return Err(de::Error::custom("duplicate member name"));
            }
            map.next_value::<Checked>()?;
            seen.push(name);
        }
        Ok(Checked)
    }
}

struct ObjectSeed<'k> {
    keep: &'k dyn Fn(&str) -> bool,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = Object;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Object, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = Object;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object, A::Error> {
        let mut seen: Vec<Cow<'de, str>> = Vec::with_capacity(16);
        let mut members = Vec::new();
        while let Some(Name(name)) = map.next_key()? {
            if seen.contains(&name) {
                return Err(de::Error::custom("duplicate member name"));
            }
            if (self.keep)(&name) {
                let Strict(v) = map.next_value()?;
                members.push((name.to_string(), v));
            } else {
                map.next_value::<Checked>()?;
            }
            seen.push(name);
        }
        Ok(Object { members })
    }
}

/// Parses a JSON object, refusing duplicate member names at any depth, and keeps the members `keep` selects.
/// `None` for anything but one object (trailing bytes included).
pub(super) fn parse_object(bytes: &[u8], keep: &dyn Fn(&str) -> bool) -> Option<Object> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let object = ObjectSeed { keep }.deserialize(&mut de).ok()?;
    de.end().ok()?;
    Some(object)
}

/// A `NumericDate` (RFC 7519 §2) as whole seconds since the epoch, floored. Non-numbers are refused; out-of-range
/// floats saturate (a `1e300` expiry is "far future", never a wrap-around).
pub(super) fn numeric_date(
    claims: &Object,
    name: &str,
    wrong_type: &'static str,
) -> Result<Option<i64>, Denial> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => {
            if let Some(i) = n.as_i64() {
                Ok(Some(i))
            } else if n.as_u64().is_some() {
                Ok(Some(i64::MAX))
            } else {
                // `as` saturates for finite floats (serde_json never yields NaN or infinities).
                #[allow(clippy::cast_possible_truncation)]
                let secs = n.as_f64().map_or(i64::MAX, |f| f.floor() as i64);
                Ok(Some(secs))
            }
        }
        Some(_) => Err(Denial::invalid_credential(wrong_type)),
    }
}

/// A claim that must be a string when present.
pub(super) fn string<'a>(
    claims: &'a Object,
    name: &str,
    wrong_type: &'static str,
) -> Result<Option<&'a str>, Denial> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Denial::invalid_credential(wrong_type)),
    }
}

/// `aud`: a string or a non-empty array of strings; `Ok(true)` when one of them is accepted.
pub(super) fn audience_matches(
    aud: &Value,
    accepted: impl Fn(&str) -> bool,
) -> Result<bool, Denial> {
    match aud {
        Value::String(s) => Ok(accepted(s)),
        Value::Array(items) if !items.is_empty() => {
            let mut found = false;
            for item in items {
                let s = item.as_str().ok_or_else(|| {
                    Denial::invalid_credential("aud holds a member that is not a string")
                })?;
                found |= accepted(s);
            }
            Ok(found)
        }
        Value::Array(_) => Err(Denial::invalid_credential("aud is an empty array")),
        _ => Err(Denial::invalid_credential(
            "aud is neither a string nor an array of strings",
        )),
    }
}

fn scopes_from<'a>(
    tokens: impl Iterator<Item = &'a str>,
    superuser: bool,
) -> Result<ScopeSet, Denial> {
    let parsed = if superuser {
        ScopeSet::danger_allow_superuser(tokens)
    } else {
        ScopeSet::parse(tokens)
    };
    parsed.map_err(|_| Denial::invalid_credential("the scope claim holds an invalid scope"))
}

fn space_separated(text: &str, superuser: bool) -> Result<ScopeSet, Denial> {
    if text.is_empty() {
        return Ok(ScopeSet::new());
    }
    scopes_from(text.split(' '), superuser)
}

/// The granted scopes: the configured claim (a space-separated string); only when it is absent, `scp` (an array of
/// strings or a space-separated string). Never the union. Neither present: no scope.
pub(super) fn scopes(
    claims: &Object,
    scope_claim: &str,
    superuser: bool,
) -> Result<ScopeSet, Denial> {
    if let Some(v) = claims.get(scope_claim) {
        return match v {
            Value::String(s) => space_separated(s, superuser),
            _ => Err(Denial::invalid_credential(
                "the scope claim is not a string",
            )),
        };
    }
    match claims.get("scp") {
        None => Ok(ScopeSet::new()),
        Some(Value::String(s)) => space_separated(s, superuser),
        Some(Value::Array(items)) => {
            let mut tokens = Vec::with_capacity(items.len());
            for item in items {
                tokens.push(item.as_str().ok_or_else(|| {
                    Denial::invalid_credential("scp holds a member that is not a string")
                })?);
            }
            scopes_from(tokens.into_iter(), superuser)
        }
        Some(_) => Err(Denial::invalid_credential(
            "scp is neither a string nor an array of strings",
        )),
    }
}

/// The allowlist claim: an array of strict CIDR strings. An empty array restricts the token to no address.
pub(super) fn allowlist(claims: &Object, name: &str) -> Result<Option<CidrSet>, Denial> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Array(items)) => {
            let mut set = CidrSet::new();
            for item in items {
                let cidr = item
                    .as_str()
                    .and_then(|s| s.parse::<Cidr>().ok())
                    .ok_or_else(|| {
                        Denial::invalid_credential("the allowlist claim holds an invalid network")
                    })?;
                set.insert(cidr);
            }
            Ok(Some(set))
        }
        Some(_) => Err(Denial::invalid_credential(
            "the allowlist claim is not an array",
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn all(bytes: &[u8]) -> Option<Object> {
        parse_object(bytes, &|_| true)
    }

    #[test]
    fn an_audience_is_a_string_or_a_non_empty_array_of_strings() {
        let aud = |json: &str| {
            let value: Value = serde_json::from_str(json).unwrap();
            audience_matches(&value, |a| a == "api").map_err(|d| d.detail())
        };
        assert_eq!(aud(r#""api""#), Ok(true));
        assert_eq!(aud(r#""other""#), Ok(false));
        // Any one member accepted is enough, wherever it stands.
        assert_eq!(aud(r#"["other", "api"]"#), Ok(true));
        assert_eq!(aud(r#"["api", "other"]"#), Ok(true));
        assert_eq!(aud(r#"["other", "more"]"#), Ok(false));
        assert_eq!(aud("[]"), Err("aud is an empty array"));
        assert_eq!(
            aud(r#"["api", 7]"#),
            Err("aud holds a member that is not a string")
        );
        for bad in ["7", "null", r#"{"a": "api"}"#, "true"] {
            assert_eq!(
                aud(bad),
                Err("aud is neither a string nor an array of strings"),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_string_claim_is_a_string_when_present() {
        let claims = all(br#"{"iss": "https://idp", "n": 7}"#).unwrap();
        assert_eq!(string(&claims, "iss", "bad iss"), Ok(Some("https://idp")));
        assert_eq!(string(&claims, "sub", "bad sub"), Ok(None));
        assert_eq!(
            string(&claims, "n", "n is not a string").map_err(|d| d.detail()),
            Err("n is not a string")
        );
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[a-z\\\\\"\u{e9}]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-c]{1,2}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// Without duplicates, the strict parser agrees with serde_json exactly.
        #[test]
        fn agrees_with_serde_json_on_unique_names(
            members in proptest::collection::btree_map("[a-d]{1,2}", json_value(), 0..6)
        ) {
            let text = Value::Object(members.clone().into_iter().collect()).to_string();
            let parsed = all(text.as_bytes()).unwrap();
            for (name, value) in &members {
                proptest::prop_assert_eq!(parsed.get(name), Some(value));
            }
            proptest::prop_assert_eq!(parsed.members.len(), members.len());
        }

        /// Repeating any member name, at the top or nested, is refused.
        #[test]
        fn any_repeated_name_is_refused(
            members in proptest::collection::btree_map("[a-d]{1,2}", json_value(), 1..6),
            pick in 0usize..6,
            nested in proptest::bool::ANY,
        ) {
            let names: Vec<&String> = members.keys().collect();
            let dup = names[pick % names.len()];
            let body = Value::Object(members.clone().into_iter().collect()).to_string();
            let with_dup = format!("{},{:?}:0}}", body.trim_end_matches('}'), dup);
            let text = if nested { format!("{{\"outer\":{with_dup}}}") } else { with_dup };
            proptest::prop_assert!(all(text.as_bytes()).is_none(), "{}", text);
            proptest::prop_assert!(parse_object(text.as_bytes(), &|_| false).is_none(), "{}", text);
        }

        /// Arbitrary bytes never panic.
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = all(&bytes);
        }
    }

    #[test]
    fn only_kept_members_are_kept_but_all_are_checked() {
        let o = parse_object(br#"{"a":1,"b":{"x":[1,{"y":2}]}}"#, &|n| n == "a").unwrap();
        assert!(o.contains_key("a"));
        assert!(!o.contains_key("b"));
        assert!(parse_object(br#"{"a":1,"b":{"x":[1,{"y":2,"y":3}]}}"#, &|n| n == "a").is_none());
        assert!(parse_object(br#"{"a":1,"b":2,"b":3}"#, &|n| n == "a").is_none());
        assert!(parse_object(br#"{"a":1,"b":"\u0000"}"#, &|n| n == "a").is_some());
    }

    #[test]
    fn duplicates_are_refused_at_any_depth() {
        assert!(all(br#"{"a":1,"b":2}"#).is_some());
        assert!(all(br#"{"a":1,"a":2}"#).is_none());
        assert!(all(br#"{"a":{"x":1,"x":1}}"#).is_none());
        assert!(all(br#"{"a":[{"x":1,"x":1}]}"#).is_none());
        // Escapes are decoded before the comparison: "\u0061" is "a".
        assert!(all(br#"{"a":1,"\u0061":2}"#).is_none());
        assert!(all(b"[1]").is_none());
        assert!(all(br#"{"a":1} x"#).is_none());
    }

    #[test]
    fn numeric_dates_saturate_and_floor() {
        let c = all(br#"{"a":1.9,"b":1e300,"c":-5,"d":"1","e":18446744073709551615}"#).unwrap();
        assert_eq!(numeric_date(&c, "a", "x").unwrap(), Some(1));
        assert_eq!(numeric_date(&c, "b", "x").unwrap(), Some(i64::MAX));
        assert_eq!(numeric_date(&c, "c", "x").unwrap(), Some(-5));
        assert!(numeric_date(&c, "d", "x").is_err());
        assert_eq!(numeric_date(&c, "e", "x").unwrap(), Some(i64::MAX));
        assert_eq!(numeric_date(&c, "z", "x").unwrap(), None);
    }

    #[test]
    fn scope_claim_wins_over_scp_and_is_never_merged() {
        let c = all(br#"{"scope":"a:read","scp":["b:read"]}"#).unwrap();
        let s = scopes(&c, "scope", false).unwrap();
        assert_eq!(s.to_string(), "a:read");
        let c = all(br#"{"scp":["b:read","c:read"]}"#).unwrap();
        assert_eq!(scopes(&c, "scope", false).unwrap().len(), 2);
        let c = all(br#"{"scp":"b:read c:read"}"#).unwrap();
        assert_eq!(scopes(&c, "scope", false).unwrap().len(), 2);
        for bad in [
            r#"{"scope":["a"]}"#,
            r#"{"scope":"a  b"}"#,
            r#"{"scp":[1]}"#,
            r#"{"scp":{}}"#,
            r#"{"scope":"*"}"#,
        ] {
            let c = all(bad.as_bytes()).unwrap();
            assert!(scopes(&c, "scope", false).is_err(), "{bad}");
        }
        let c = all(br#"{"scope":"*"}"#).unwrap();
        assert!(scopes(&c, "scope", true).is_ok());
    }

    #[test]
    fn allowlists_are_strict() {
        let c =
            all(br#"{"ips":["10.0.0.0/8"],"e":[],"bad":["10.0.0.1/8"],"s":"10.0.0.0/8"}"#).unwrap();
        assert_eq!(allowlist(&c, "ips").unwrap().unwrap().len(), 1);
        assert!(allowlist(&c, "e").unwrap().unwrap().is_empty());
        assert!(allowlist(&c, "bad").is_err());
        assert!(allowlist(&c, "s").is_err());
        assert!(allowlist(&c, "none").unwrap().is_none());
    }
}
