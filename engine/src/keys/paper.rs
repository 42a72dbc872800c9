//! The master secret as a paper key: Crockford base32 in groups of five,
//! prefixed `kith1-`, with a two-byte checksum so typos are caught.

use crate::keys::MasterSecret;
use crate::{Error, Result};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const PREFIX: &str = "kith1";
const CHECKSUM_CONTEXT: &str = "kith 2026-11 v1 paper key checksum";

fn checksum(secret: &[u8; 32]) -> [u8; 2] {
    let h = blake3::derive_key(CHECKSUM_CONTEXT, secret);
    [h[0], h[1]]
}

/// Encodes the master secret as a paper key.
pub fn format_paper_key(master: &MasterSecret) -> String {
    let mut bytes = master.0.to_vec();
    bytes.extend_from_slice(&checksum(&master.0));
    let mut digits = String::new();
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            digits.push(digit((acc >> bits) & 31));
        }
    }
    if bits > 0 {
        digits.push(digit((acc << (5 - bits)) & 31));
    }
    let groups: Vec<String> = digits
        .as_bytes()
        .chunks(5)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    format!("{PREFIX}-{}", groups.join("-"))
}

/// The base32 digit for a 5-bit value.
fn digit(value: u32) -> char {
    // Every 5-bit value has a digit: ALPHABET holds 32.
    ALPHABET.get(value as usize).map_or('?', |&a| char::from(a))
}

fn digit_value(c: char) -> Option<u32> {
    let c = match c.to_ascii_uppercase() {
        'O' => '0',
        'I' | 'L' => '1',
        c => c,
    };
    ALPHABET
        .iter()
        .position(|&a| char::from(a) == c)
        .and_then(|p| u32::try_from(p).ok())
}

/// Parses a paper key, tolerating case, spaces, dashes and the usual
/// look-alike letters (O for 0, I and L for 1).
pub fn parse_paper_key(text: &str) -> Result<MasterSecret> {
    let text = text.trim();
    let body = text
        .strip_prefix(PREFIX)
        .or_else(|| text.strip_prefix("KITH1"))
        .ok_or(Error::InvalidMasterKey("it must start with kith1-"))?;
    let mut bytes = Vec::with_capacity(34);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in body.chars() {
        if c == '-' || c.is_whitespace() {
            continue;
        }
        let v = digit_value(c).ok_or(Error::InvalidMasterKey(
            "it has a character that is not base32",
        ))?;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            bytes.push(((acc >> bits) & 0xff) as u8);
        }
    }
    let bytes: [u8; 34] = bytes
        .try_into()
        .map_err(|_| Error::InvalidMasterKey("it has the wrong length"))?;
    let [secret @ .., c0, c1] = bytes;
    if checksum(&secret) != [c0, c1] {
        return Err(Error::InvalidMasterKey(
            "its checksum does not match: check for a typo",
        ));
    }
    Ok(MasterSecret(secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn paper_keys_round_trip(bytes in any::<[u8; 32]>()) {
            let m = MasterSecret(bytes);
            let text = format_paper_key(&m);
            prop_assert_eq!(parse_paper_key(&text).unwrap().0, bytes);
            prop_assert_eq!(parse_paper_key(&text.to_lowercase().replace('-', " ")).unwrap().0, bytes);
        }
    }

    #[test]
    fn a_typo_is_caught_by_the_checksum() {
        let m = MasterSecret([42u8; 32]);
        let text = format_paper_key(&m);
        let mut chars: Vec<char> = text.chars().collect();
        let i = 8;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let typo: String = chars.into_iter().collect();
        assert!(parse_paper_key(&typo).is_err());
        assert!(parse_paper_key("nonsense").is_err());
        assert!(parse_paper_key("kith1-").is_err());
    }
}
