//! Byte sizes as people write them: `500M`, `10GiB`, `1.5T`, `123456`.
//!
//! Suffixes are binary (K = KiB = 1024) whether or not an `i` is written:
//! disk quotas are meant as "about this much", and one rule is easier to
//! remember than two.

use crate::NodeError;

/// Parses a size; a bare number is bytes.
pub fn parse_size(text: &str) -> Result<u64, NodeError> {
    let err = |reason| NodeError::Size {
        text: text.to_owned(),
        reason,
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        return Err(err("no number"));
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return Err(err("unknown unit")),
    };
    let value: f64 = num.parse().map_err(|_| err("not a number"))?;
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes >= u64::MAX as f64 {
        return Err(err("too large"));
    }
    Ok(bytes.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("123").unwrap(), 123);
        assert_eq!(parse_size("1K").unwrap(), 1024);
        assert_eq!(parse_size("2MiB").unwrap(), 2 << 20);
        assert_eq!(parse_size("10G").unwrap(), 10 << 30);
        assert_eq!(parse_size("1.5 GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("1t").unwrap(), 1 << 40);
    }

    #[test]
    fn bad_sizes_are_refused() {
        for bad in ["", "G", "12X", "1e99999T", "-5"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
