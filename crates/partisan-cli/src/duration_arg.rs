//! Durations on the command line: a number with a unit (`2s`, `500ms`, `1.5m`, `250us`, `1h`),
//! or a bare number in the unit the flag always took (seconds or milliseconds), so that old
//! command lines keep working.

use std::time::Duration;

/// Parses `text` as a duration; a bare number is in units of `bare` (one second for the flags
/// counted in seconds, one millisecond for the others).
fn parse(text: &str, bare: Duration) -> Result<Duration, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| {
        format!("{text:?} is not a duration: expected a number with a unit, like 2s or 500ms")
    })?;
    let unit_secs = match unit.trim() {
        "" => bare.as_secs_f64(),
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "{text:?}: unknown unit {other:?} (use us, ms, s, m or h)"
            ))
        }
    };
    let secs = value * unit_secs;
    if !secs.is_finite() || secs > 1e9 {
        return Err(format!("{text:?} is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration flag whose bare numbers are seconds.
pub fn secs(text: &str) -> Result<Duration, String> {
    parse(text, Duration::from_secs(1))
}

/// A duration flag whose bare numbers are milliseconds.
pub fn millis(text: &str) -> Result<Duration, String> {
    parse(text, Duration::from_millis(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_and_bare_numbers() {
        assert_eq!(secs("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(secs("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(secs("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(secs("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(secs("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(secs("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(millis("250"), Ok(Duration::from_millis(250)));
        assert_eq!(millis("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(millis(" 0 "), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_what_was_expected() {
        for bad in ["", "s", "2 parsecs", "two", "1e999", "-1s", "1..2s"] {
            let e = secs(bad).expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert!(secs("3d").unwrap_err().contains("unknown unit \"d\""));
    }
}
