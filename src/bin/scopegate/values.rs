//! The values that flags take, parsed once at the boundary. Every parser takes any text, never panics, and answers
//! an error of one line that starts with the flag it names (the command exits 2 with it).

use std::time::Duration;

use scopegate::Attributes;
use scopegate::network::{Cidr, CidrSet};
use scopegate::policy::ScopeSet;

/// The longest text a free-form flag (`--name`, `--kid`, `--issuer`, …) or an attribute takes, in bytes.
pub(crate) const MAX_TEXT_LEN: usize = 1024;

/// The longest duration accepted: 100 years.
const MAX_DURATION_SECS: u64 = 100 * 365 * 86_400;

/// A `DURATION`: a whole number and one unit, `90s`, `15m`, `12h`, `30d`; at most 100 years.
pub(crate) fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{flag}: invalid duration {text:?}: expected a whole number and a unit, as in 90s, 15m, 12h, 30d"
        )
    };
    // The unit is the last character, whatever its width: a non-ASCII one is refused, never split.
    let mut chars = text.chars();
    let unit = chars.next_back().ok_or_else(bad)?;
    let digits = chars.as_str();
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return Err(bad());
    }
    let unit_secs: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        _ => return Err(bad()),
    };
    let too_long = || format!("{flag}: invalid duration {text:?}: longer than 100 years");
    let n: u64 = digits.parse().map_err(|_| too_long())?;
    let secs = n
        .checked_mul(unit_secs)
        .filter(|s| *s <= MAX_DURATION_SECS)
        .ok_or_else(too_long)?;
    Ok(Duration::from_secs(secs))
}

/// A `DURATION` that must be more than zero (lifetimes).
pub(crate) fn positive_duration(flag: &str, text: &str) -> Result<Duration, String> {
    let d = duration(flag, text)?;
    if d.is_zero() {
        return Err(format!(
            "{flag}: invalid duration {text:?}: must be more than zero"
        ));
    }
    Ok(d)
}

/// A free-form value (a name, a key id, an issuer): not empty, no control character, at most [`MAX_TEXT_LEN`]
/// bytes.
pub(crate) fn text<'a>(flag: &str, value: &'a str) -> Result<&'a str, String> {
    if value.is_empty() {
        return Err(format!("{flag}: the value is empty"));
    }
    if value.len() > MAX_TEXT_LEN {
        return Err(format!(
            "{flag}: the value is {} bytes long; at most {MAX_TEXT_LEN} are accepted",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{flag}: the value holds a control character"));
    }
    Ok(value)
}

/// `--attr KEY=VALUE` values: each key given once, neither part empty.
pub(crate) fn attrs(values: &[String]) -> Result<Attributes, String> {
    let mut out = Attributes::new();
    for attr in values {
        let Some((k, v)) = attr.split_once('=') else {
            return Err(format!("--attr {attr:?}: expected KEY=VALUE"));
        };
        if k.is_empty() || v.is_empty() {
            return Err(format!(
                "--attr {attr:?}: expected KEY=VALUE, neither of them empty"
            ));
        }
        text("--attr", attr)?;
        if out.insert(k.to_owned(), v.to_owned()).is_some() {
            return Err(format!("--attr: the key {k:?} is given twice"));
        }
    }
    Ok(out)
}

/// `--scope` values as a scope set.
pub(crate) fn scopes(values: &[String]) -> Result<ScopeSet, String> {
    ScopeSet::parse(values).map_err(|e| format!("--scope: {e}"))
}

/// `--allow-ip` values as a network set; `None` when none are given (no restriction).
pub(crate) fn cidrs(values: &[String]) -> Result<Option<CidrSet>, String> {
    if values.is_empty() {
        return Ok(None);
    }
    values
        .iter()
        .map(|v| v.parse::<Cidr>().map_err(|e| format!("--allow-ip: {e}")))
        .collect::<Result<CidrSet, _>>()
        .map(Some)
}

/// The invariants of every parser over one arbitrary value: an answer, never a panic; an error is one line that
/// starts with the flag it names; an accepted duration is a whole number of seconds within the bound. The
/// property tests below, the `cli_values` fuzz target and the corpus replay run this same function.
#[cfg(any(test, fuzzing))]
pub(crate) fn check_all(value: &str) {
    fn one_line_naming<T>(result: Result<T, String>, flag: &str) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                assert!(e.starts_with(flag), "{e:?} does not name {flag}");
                assert!(!e.contains('\n'), "{e:?} is more than one line");
                None
            }
        }
    }
    if let Some(d) = one_line_naming(duration("--grace", value), "--grace") {
        assert!(
            d.as_secs() <= MAX_DURATION_SECS && d.subsec_nanos() == 0,
            "{value:?}"
        );
        assert!(value.is_ascii(), "{value:?} accepted");
    }
    if let Some(d) = one_line_naming(positive_duration("--expires-in", value), "--expires-in") {
        assert!(!d.is_zero());
    }
    if let Some(t) = one_line_naming(text("--name", value), "--name") {
        assert!(!t.is_empty() && t.len() <= MAX_TEXT_LEN);
    }
    let listed = vec![value.to_owned()];
    if let Some(a) = one_line_naming(attrs(&listed), "--attr") {
        assert_eq!(a.len(), 1);
    }
    one_line_naming(scopes(&listed), "--scope");
    one_line_naming(cidrs(&listed), "--allow-ip");
    // Several values at once: split at commas, as a user might repeat the flag.
    let many: Vec<String> = value.split(',').map(str::to_owned).collect();
    one_line_naming(attrs(&many), "--attr");
    one_line_naming(scopes(&many), "--scope");
    one_line_naming(cidrs(&many), "--allow-ip");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("--x", "90s"), Ok(Duration::from_secs(90)));
        assert_eq!(duration("--x", "15m"), Ok(Duration::from_secs(900)));
        assert_eq!(duration("--x", "12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(duration("--x", "30d"), Ok(Duration::from_secs(2_592_000)));
        assert_eq!(
            duration("--x", "36500d"),
            Ok(Duration::from_secs(MAX_DURATION_SECS))
        );
        for bad in [
            "",
            "s",
            "10",
            "1.5h",
            "-1h",
            "+1h",
            "10 m",
            "10M",
            "1w",
            "01h",
            "99999999999999999999d",
            "36501d",
            // Non-ASCII units and digits: refused, never a panic (the unit used to be split off by byte).
            "1é",
            "5é",
            "é",
            "1ｓ",
            "١s",
            "1s\u{301}",
        ] {
            let err = duration("--grace", bad).unwrap_err();
            assert!(err.starts_with("--grace: "), "{err}");
        }
        assert_eq!(duration("--x", "0s"), Ok(Duration::ZERO));
        assert!(positive_duration("--x", "0s").is_err());
        assert!(positive_duration("--x", "1s").is_ok());
    }

    #[test]
    fn attributes() {
        let a = attrs(&["tenant=acme".into(), "tier=gold=1".into()]).unwrap();
        assert_eq!(a.get("tenant").map(String::as_str), Some("acme"));
        assert_eq!(a.get("tier").map(String::as_str), Some("gold=1"));
        for bad in [
            vec!["tenant".to_owned()],
            vec!["=acme".to_owned()],
            vec!["tenant=".to_owned()],
            vec!["tenant=a\u{7}".to_owned()],
            vec!["tenant=a".to_owned(), "tenant=b".to_owned()],
            vec![format!("tenant={}", "a".repeat(MAX_TEXT_LEN))],
        ] {
            let err = attrs(&bad).unwrap_err();
            assert!(err.starts_with("--attr"), "{err}");
        }
    }

    #[test]
    fn free_text() {
        assert_eq!(text("--kid", "key-1"), Ok("key-1"));
        assert_eq!(text("--kid", "clé"), Ok("clé"));
        for bad in ["", "a\nb", "\u{0}", &"x".repeat(MAX_TEXT_LEN + 1)] {
            assert!(text("--kid", bad).unwrap_err().starts_with("--kid: "));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// Any text, non-ASCII and control characters included: an answer, never a panic; errors name the flag.
        #[test]
        fn value_parsers_never_panic(value in "\\PC{0,40}|[0-9]{0,25}[smhdé\u{0}-\u{10ffff}]?") {
            check_all(&value);
        }

        /// An accepted duration is exactly its number times its unit.
        #[test]
        fn accepted_durations_mean_what_they_say(n in 0u64..=36_500, unit in "[smhd]") {
            let text_value = format!("{n}{unit}");
            let secs = match unit.as_str() { "s" => n, "m" => n * 60, "h" => n * 3600, _ => n * 86_400 };
            let parsed = duration("--x", &text_value);
            if secs <= MAX_DURATION_SECS {
                prop_assert_eq!(parsed, Ok(Duration::from_secs(secs)));
            } else {
                prop_assert!(parsed.is_err());
            }
        }
    }
}
