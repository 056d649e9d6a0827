//! The bytes inside the proto's `payload` fields: a format version byte,
//! then bincode of the openraft or Warren type.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Version of the payload encoding. Bump it when a payload type changes shape.
///
/// Version 2: message bodies are tagged ([`warren_core::Body`]).
pub const PAYLOAD_VERSION: u8 = 2;

/// Why a payload could not be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("bincode: {0}")]
    Bincode(#[from] bincode::Error),
    #[error("payload has version {found}, this build reads {PAYLOAD_VERSION}")]
    UnsupportedVersion { found: u8 },
    #[error("payload is empty")]
    Empty,
}

/// Encodes `value` as a payload.
///
/// # Errors
/// bincode cannot encode it.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let size = bincode::serialized_size(value)?;
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
    out.push(PAYLOAD_VERSION);
    bincode::serialize_into(&mut out, value)?;
    Ok(out)
}

/// Decodes a payload.
///
/// # Errors
/// Empty, of another version, or not a `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&PAYLOAD_VERSION, rest)) => Ok(bincode::deserialize(rest)?),
        Some((&found, _)) => Err(CodecError::UnsupportedVersion { found }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip_and_unknown_versions_are_refused() {
        let mut bytes = encode(&(3u64, "three".to_owned())).expect("encode");
        let back: (u64, String) = decode(&bytes).expect("decode");
        assert_eq!(back, (3, "three".to_owned()));
        bytes[0] = 9;
        assert!(matches!(
            decode::<(u64, String)>(&bytes),
            Err(CodecError::UnsupportedVersion { found: 9 })
        ));
        assert!(matches!(decode::<u8>(&[]), Err(CodecError::Empty)));
    }
}
