//! Newtyped 32-byte identifiers.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
        pub struct $name(pub [u8; 32]);

        /// Hex in human-readable formats (JSON); in postcard exactly what a
        /// derived implementation writes, 32 raw bytes.
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
                if serializer.is_human_readable() {
                    serializer.serialize_str(&self.to_hex())
                } else {
                    serializer.serialize_newtype_struct(stringify!($name), &self.0)
                }
            }
        }

        impl $name {
            /// The full lowercase hex form.
            pub fn to_hex(&self) -> String {
                hex::encode(self.0)
            }

            /// The first eight hex digits, for display.
            pub fn short(&self) -> String {
                hex::encode(&self.0[..4])
            }

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Parses a full 64-digit hex id.
            pub fn from_hex(s: &str) -> Result<Self> {
                let mut out = [0u8; 32];
                hex::decode_to_slice(s, &mut out).map_err(|_| {
                    Error::InvalidInput(format!("{s:?} is not a 64-digit hex id"))
                })?;
                Ok($name(out))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }

        impl FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::from_hex(s)
            }
        }
    };
}

id_type!(
    /// A blob: keyed BLAKE3 of its plaintext under the chunk-id key.
    BlobId
);
id_type!(
    /// A pack: BLAKE3 of the stored pack bytes.
    PackId
);
id_type!(
    /// An index delta: BLAKE3 of the stored file bytes.
    IndexId
);
id_type!(
    /// A snapshot: BLAKE3 of the stored file bytes.
    SnapshotId
);
id_type!(
    /// A key file: BLAKE3 of the stored file bytes.
    KeyId
);

/// BLAKE3 of stored bytes: the name of content-addressed objects.
pub(crate) fn hash_of(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_in_json_and_raw_bytes_in_postcard() {
        let id = BlobId([0xab; 32]);
        assert_eq!(postcard::to_stdvec(&id).unwrap(), vec![0xab; 32]);
        let back: BlobId = postcard::from_bytes(&[0xab; 32]).unwrap();
        assert_eq!(back, id);
        assert_eq!(
            serde_json::to_string(&id).unwrap(),
            format!("\"{}\"", "ab".repeat(32))
        );
    }

    #[test]
    fn ids_round_trip_through_hex() {
        let id = BlobId([7u8; 32]);
        assert_eq!(BlobId::from_hex(&id.to_hex()).unwrap(), id);
        assert_eq!(id.short().len(), 8);
        assert!(BlobId::from_hex("zz").is_err());
    }
}
