//! The byte encoding of everything this crate stores or ships: a format
//! version byte, then bincode.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Version of the encoding of log entries, votes and snapshots. Bump it
/// (and keep a decoder for the old one) when a stored type changes shape.
///
/// Version 2: a message body is a tagged [`warren_core::Body`] (in memory,
/// or a handle into the node's body store). Version 1 values, where a body
/// was its bytes, still decode.
///
/// Version 3: a queue's ready messages are a head, pages and a tail
/// ([`warren_core::ready`]). Version 2 values, one list, still decode.
///
/// Version 4: a consumer has a priority (`x-priority`), a queued message
/// a delivery count (quorum queues' `x-delivery-count`). Version 3 values,
/// without them, still decode (0 for both).
///
/// Version 5: a `no_ack` consumer has an `in_flight` count (ADR 0026), and
/// commands `ReturnUnsent` and `Written` exist. Version 4 values still
/// decode (0 in flight).
///
/// Version 6: stream queues (ADR 0030): a consumer has the offset it reads
/// next, a queued message the time a stream appended it, a queue its
/// stream segments. Version 5 values still decode (none of them).
pub(crate) const CODEC_VERSION: u8 = 6;

/// The last version without stream queues.
const STREAMLESS_VERSION: u8 = 5;

/// The last version whose consumers had no `in_flight` count.
const NO_IN_FLIGHT_VERSION: u8 = 4;

/// The last version whose consumers had no priority.
const UNPRIORITISED_VERSION: u8 = 3;

/// The version whose ready messages were one list.
const PLAIN_READY_VERSION: u8 = 2;

/// The version whose bodies were plain bytes.
const LEGACY_VERSION: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CodecError {
    #[error("bincode: {0}")]
    Bincode(#[from] bincode::Error),
    #[error("encoded value has version {found}, this build reads {CODEC_VERSION}")]
    UnsupportedVersion { found: u8 },
    #[error("encoded value is empty")]
    Empty,
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    let size = bincode::serialized_size(value)?;
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0).saturating_add(1));
    out.push(CODEC_VERSION);
    bincode::serialize_into(&mut out, value)?;
    Ok(out)
}

pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.split_first() {
        None => Err(CodecError::Empty),
        Some((&CODEC_VERSION, rest)) => Ok(bincode::deserialize(rest)?),
        Some((&STREAMLESS_VERSION, rest)) => Ok(records_of(STREAMLESS_VERSION, || bincode::deserialize(rest))?),
        Some((&NO_IN_FLIGHT_VERSION, rest)) => Ok(records_of(NO_IN_FLIGHT_VERSION, || bincode::deserialize(rest))?),
        Some((&UNPRIORITISED_VERSION, rest)) => Ok(unprioritised(|| bincode::deserialize(rest))?),
        Some((&PLAIN_READY_VERSION, rest)) => Ok(unprioritised(|| {
            warren_core::with_plain_ready(|| bincode::deserialize(rest))
        })?),
        Some((&LEGACY_VERSION, rest)) => Ok(unprioritised(|| {
            warren_core::with_legacy_bodies(|| warren_core::with_plain_ready(|| bincode::deserialize(rest)))
        })?),
        Some((&found, _)) => Err(CodecError::UnsupportedVersion { found }),
    }
}

/// Runs a decode of a version before consumers had a priority.
fn unprioritised<R>(f: impl FnOnce() -> R) -> R {
    records_of(UNPRIORITISED_VERSION, f)
}

/// Runs a decode of records as codec version `version` wrote them.
fn records_of<R>(version: u8, f: impl FnOnce() -> R) -> R {
    warren_core::with_record_version(version, f)
}

/// Writes the encoding of `value` (as [`encode`]) to `out`.
pub(crate) fn encode_into<T: Serialize>(value: &T, out: &mut impl std::io::Write) -> Result<(), CodecError> {
    out.write_all(&[CODEC_VERSION])
        .map_err(|e| CodecError::Bincode(Box::new(bincode::ErrorKind::Io(e))))?;
    bincode::serialize_into(out, value)?;
    Ok(())
}

/// Reads a value of the current version (as [`decode`]) from `input`.
pub(crate) fn decode_from<T: DeserializeOwned>(input: &mut impl std::io::Read) -> Result<T, CodecError> {
    let mut version = [0u8; 1];
    input.read_exact(&mut version).map_err(|_| CodecError::Empty)?;
    match version[0] {
        CODEC_VERSION => Ok(bincode::deserialize_from(input)?),
        STREAMLESS_VERSION => Ok(records_of(STREAMLESS_VERSION, || bincode::deserialize_from(input))?),
        NO_IN_FLIGHT_VERSION => Ok(records_of(NO_IN_FLIGHT_VERSION, || bincode::deserialize_from(input))?),
        UNPRIORITISED_VERSION => Ok(unprioritised(|| bincode::deserialize_from(input))?),
        PLAIN_READY_VERSION => Ok(unprioritised(|| {
            warren_core::with_plain_ready(|| bincode::deserialize_from(input))
        })?),
        found => Err(CodecError::UnsupportedVersion { found }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_values_round_trip_and_carry_the_version() {
        let encoded = encode(&(7u64, "seven".to_owned())).expect("encode");
        assert_eq!(encoded[0], CODEC_VERSION);
        let decoded: (u64, String) = decode(&encoded).expect("decode");
        assert_eq!(decoded, (7, "seven".to_owned()));
    }

    #[test]
    fn version_1_values_with_plain_bodies_still_decode() {
        /// A message as version 1 encoded it: the body was its bytes.
        #[derive(Serialize)]
        struct MessageV1 {
            exchange: String,
            routing_key: String,
            properties: warren_core::Properties,
            body: bytes::Bytes,
        }
        let old = MessageV1 {
            exchange: "amq.direct".to_owned(),
            routing_key: "k".to_owned(),
            properties: warren_core::Properties::default(),
            body: bytes::Bytes::from_static(b"body \xe2\x9c\x93"),
        };
        let mut encoded = vec![LEGACY_VERSION];
        bincode::serialize_into(&mut encoded, &(7u64, &old)).expect("encode");
        let (n, decoded): (u64, warren_core::Message) = decode(&encoded).expect("decode version 1");
        assert_eq!(n, 7);
        assert_eq!(decoded.routing_key, "k");
        assert_eq!(decoded.body, warren_core::Body::Inline(old.body.clone()));
        let again: (u64, warren_core::Message) = decode(&encode(&(7u64, &decoded)).expect("encode")).expect("decode");
        assert_eq!(again.1, decoded, "and the current version round-trips it");
    }

    #[test]
    fn version_2_ready_lists_still_decode() {
        use std::collections::VecDeque;
        use std::sync::Arc;
        let entry = |seq: u64| warren_core::queue::QueuedMessage {
            id: warren_core::MessageId(seq),
            seq,
            message: Arc::new(warren_core::Message {
                exchange: "".into(),
                routing_key: "q".to_owned(),
                properties: Arc::new(warren_core::Properties::default()),
                body: warren_core::Body::Inline(bytes::Bytes::from_static(b"b")),
            }),
            redelivered: false,
            expires_at_ms: None,
            priority: 0,
            returns: 0,
            appended_ms: 0,
        };
        let list: VecDeque<_> = (0..3).map(entry).collect();
        // The record as version 2 wrote it (no delivery count yet).
        #[derive(serde::Serialize)]
        struct OldEntry {
            id: warren_core::MessageId,
            seq: u64,
            message: Arc<warren_core::Message>,
            redelivered: bool,
            expires_at_ms: Option<u64>,
            priority: u8,
        }
        let old: VecDeque<OldEntry> = list
            .iter()
            .map(|e| OldEntry {
                id: e.id,
                seq: e.seq,
                message: Arc::clone(&e.message),
                redelivered: e.redelivered,
                expires_at_ms: e.expires_at_ms,
                priority: e.priority,
            })
            .collect();
        let mut encoded = vec![PLAIN_READY_VERSION];
        bincode::serialize_into(&mut encoded, &old).expect("encode");
        let ready: warren_core::ready::Ready = decode(&encoded).expect("decode version 2");
        assert_eq!(ready.entries().expect("in memory"), Vec::from(list.clone()));
        let streamed: warren_core::ready::Ready = decode_from(&mut &encoded[..]).expect("decode version 2");
        assert_eq!(streamed.len(), 3);
        assert!(
            decode::<warren_core::ready::Ready>(&{
                let mut current = encoded.clone();
                current[0] = CODEC_VERSION;
                current
            })
            .is_err(),
            "the current version reads another layout"
        );
    }

    #[test]
    fn consumers_of_versions_3_and_4_still_decode() {
        let consumer = warren_core::consumer::Consumer {
            vhost: "/".into(),
            queue: "q".into(),
            queue_uid: 3,
            serial: 9,
            no_ack: true,
            exclusive: false,
            prefetch: 10,
            unacked: 0,
            priority: 5,
            in_flight: 0,
            in_flight_bytes: 0,
            lookahead: warren_core::Lookahead::NONE,
            stream_next: None,
        };
        /// A consumer as version 4 wrote it: no `in_flight`.
        #[derive(Serialize)]
        struct ConsumerV4<'a> {
            vhost: &'a warren_core::VHost,
            queue: &'a warren_core::QueueName,
            queue_uid: u64,
            serial: u64,
            no_ack: bool,
            exclusive: bool,
            prefetch: u16,
            unacked: u32,
            priority: i32,
        }
        let v4 = ConsumerV4 {
            vhost: &consumer.vhost,
            queue: &consumer.queue,
            queue_uid: 3,
            serial: 9,
            no_ack: true,
            exclusive: false,
            prefetch: 10,
            unacked: 0,
            priority: 5,
        };
        let mut encoded = vec![NO_IN_FLIGHT_VERSION];
        bincode::serialize_into(&mut encoded, &(&v4, 7u64)).expect("encode");
        let decoded: (warren_core::consumer::Consumer, u64) = decode(&encoded).expect("decode version 4");
        assert_eq!(
            decoded,
            (consumer.clone(), 7),
            "the field after it is read in its place"
        );
        // Version 3: no priority either.
        let mut encoded = vec![UNPRIORITISED_VERSION];
        bincode::serialize_into(
            &mut encoded,
            &((&v4.vhost, &v4.queue, 3u64, 9u64, true, false, 10u16, 0u32), 7u64),
        )
        .expect("encode");
        let decoded: (warren_core::consumer::Consumer, u64) = decode(&encoded).expect("decode version 3");
        assert_eq!(decoded.0.priority, 0);
        assert_eq!((decoded.0.in_flight, decoded.0.in_flight_bytes, decoded.1), (0, 0, 7));
        let mut current = vec![CODEC_VERSION];
        bincode::serialize_into(&mut current, &(&consumer, 7u64)).expect("encode");
        assert_eq!(encode(&(&consumer, 7u64)).expect("encode"), current);
    }

    /// Version 5 wrote the consumer's and the `Consume`'s `credit` as a
    /// bool; the field is a `Lookahead` byte now, with `true` meaning what
    /// it meant (twice the prefetch), and an old build refuses the new
    /// value instead of reading it as something else.
    #[test]
    fn a_version_5_credit_flag_reads_as_its_lookahead() {
        for (credit, lookahead) in [
            (false, warren_core::Lookahead::NONE),
            (true, warren_core::Lookahead::V5),
        ] {
            let mut encoded = vec![CODEC_VERSION];
            bincode::serialize_into(&mut encoded, &(credit, 7u64)).expect("encode");
            let decoded: (warren_core::Lookahead, u64) = decode(&encoded).expect("decode");
            assert_eq!(decoded, (lookahead, 7));
        }
        let current = encode(&(warren_core::Lookahead::CURRENT, 7u64)).expect("encode");
        assert!(
            decode::<(bool, u64)>(&current).is_err(),
            "a reader of the bool refuses the new lookahead"
        );
        let command = warren_core::Command::Consume {
            vhost: "/".into(),
            queue: "q".into(),
            consumer_tag: "c".into(),
            no_ack: false,
            exclusive: false,
            arguments: amq_protocol_types::FieldTable::default(),
            lookahead: warren_core::Lookahead::V5,
        };
        let encoded = encode(&command).expect("encode");
        assert_eq!(
            encoded.last(),
            Some(&1),
            "the lookahead is the command's last byte, where version 5 wrote `credit: true`"
        );
        assert_eq!(decode::<warren_core::Command>(&encoded).expect("decode"), command);
    }

    /// Version 5 records had no stream fields (ADR 0030): a consumer
    /// without its offset, a queued message without its append time.
    #[test]
    fn version_5_records_decode_without_stream_fields() {
        let consumer = warren_core::consumer::Consumer {
            vhost: "/".into(),
            queue: "q".into(),
            queue_uid: 3,
            serial: 9,
            no_ack: false,
            exclusive: false,
            prefetch: 10,
            unacked: 2,
            priority: 0,
            in_flight: 0,
            in_flight_bytes: 0,
            lookahead: warren_core::Lookahead::CURRENT,
            stream_next: Some(42),
        };
        let mut v5 = vec![STREAMLESS_VERSION];
        // The same fields but the last, in order, then a marker.
        bincode::serialize_into(
            &mut v5,
            &(
                (&consumer.vhost, &consumer.queue, 3u64, 9u64, false, false, 10u16, 2u32),
                (0i32, 0u32, 0u64, warren_core::Lookahead::CURRENT),
                7u64,
            ),
        )
        .expect("encode");
        let decoded: (warren_core::consumer::Consumer, u64) = decode(&v5).expect("decode version 5");
        assert_eq!(
            decoded,
            (
                warren_core::consumer::Consumer {
                    stream_next: None,
                    ..consumer.clone()
                },
                7
            )
        );
        let current = encode(&(&consumer, 7u64)).expect("encode");
        assert_eq!(
            decode::<(warren_core::consumer::Consumer, u64)>(&current).expect("decode"),
            (consumer, 7)
        );
    }

    #[test]
    fn unknown_versions_are_refused() {
        let mut encoded = encode(&1u32).expect("encode");
        encoded[0] = 200;
        assert!(matches!(
            decode::<u32>(&encoded),
            Err(CodecError::UnsupportedVersion { found: 200 })
        ));
        assert!(matches!(decode::<u32>(&[]), Err(CodecError::Empty)));
    }
}
