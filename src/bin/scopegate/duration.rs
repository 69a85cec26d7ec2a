//! `DURATION` arguments: a whole number and one unit, `90s`, `15m`, `12h`, `30d`.

use std::time::Duration;

pub(crate) fn parse(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "invalid duration {text:?}: expected a whole number and a unit, as in 90s, 15m, 12h, 30d"
        )
    };
    let split = text.len().checked_sub(1).ok_or_else(bad)?;
    let (digits, unit) = text.split_at(split);
    if digits.is_empty()
        || !digits.bytes().all(|b| b.is_ascii_digit())
        || (digits.len() > 1 && digits.starts_with('0'))
    {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit_secs: u64 = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    let secs = n
        .checked_mul(unit_secs)
        .filter(|s| *s <= 100 * 365 * 86_400)
        .ok_or_else(|| format!("invalid duration {text:?}: longer than 100 years"))?;
    Ok(Duration::from_secs(secs))
}

/// A duration that must be more than zero (lifetimes).
pub(crate) fn parse_positive(text: &str) -> Result<Duration, String> {
    let d = parse(text)?;
    if d.is_zero() {
        return Err(format!("invalid duration {text:?}: must be more than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse("30d"), Ok(Duration::from_secs(2_592_000)));
        for bad in [
            "",
            "s",
            "10",
            "1.5h",
            "-1h",
            "10 m",
            "10M",
            "1w",
            "01h",
            "99999999999999999999d",
            "36501d",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert_eq!(parse("0s"), Ok(Duration::ZERO));
        assert!(parse_positive("0s").is_err());
        assert!(parse_positive("1s").is_ok());
    }
}
