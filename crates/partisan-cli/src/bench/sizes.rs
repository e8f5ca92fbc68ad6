//! Byte sizes on the command line: `64`, `1K`, `1KiB`, `64k`, `1M`, `1MiB` (powers of 1024).

use std::fmt;
use std::str::FromStr;

/// A payload size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size(pub usize);

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: usize = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size (e.g. 64, 1K, 64KiB, 1M)"))?;
        let mult = match unit.to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "k" | "kb" | "kib" => 1024,
            "m" | "mb" | "mib" => 1024 * 1024,
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K or M)")),
        };
        n.checked_mul(mult)
            .map(Size)
            .ok_or_else(|| format!("{s:?} is too large"))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        if n >= 1024 * 1024 && n % (1024 * 1024) == 0 {
            write!(f, "{} MiB", n / (1024 * 1024))
        } else if n >= 1024 && n % 1024 == 0 {
            write!(f, "{} KiB", n / 1024)
        } else {
            write!(f, "{n} B")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units_and_print_back() {
        let p = |s: &str| s.parse::<Size>().unwrap().0;
        assert_eq!(p("64"), 64);
        assert_eq!(p("1K"), 1024);
        assert_eq!(p("64KiB"), 65536);
        assert_eq!(p("1m"), 1 << 20);
        assert!("x".parse::<Size>().is_err());
        assert!("3G".parse::<Size>().unwrap_err().contains("unknown unit"));
        assert_eq!(Size(1 << 20).to_string(), "1 MiB");
        assert_eq!(Size(65536).to_string(), "64 KiB");
        assert_eq!(Size(100).to_string(), "100 B");
    }
}
