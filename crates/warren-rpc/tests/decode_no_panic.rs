//! The cluster port's payload decoding never panics (issue 13: "a fuzz
//! target for the RPC decoding"). Only a caller with the secret reaches
//! the decoder now, but a peer with a bug, a version skew or a flipped
//! bit must still get an error, not take the node down. Property tests:
//! arbitrary bytes, and valid payloads truncated and with bytes changed,
//! decoded as every type the service and the client decode.

use std::sync::Arc;

use bytes::Bytes;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest, VoteResponse};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};
use proptest::prelude::*;
use warren_cluster::{Proposal, TypeConfig};
use warren_core::{Batch, Command, ExchangeName, Message, Properties, QueueName, Request, VHost};
use warren_rpc::codec::{decode, encode, PAYLOAD_VERSION};

/// Decodes `bytes` as every payload type; each may fail, none may panic.
fn decode_everything(bytes: &[u8]) {
    let _ = decode::<AppendEntriesRequest<TypeConfig>>(bytes);
    let _ = decode::<VoteRequest<u64>>(bytes);
    let _ = decode::<InstallSnapshotRequest<TypeConfig>>(bytes);
    let _ = decode::<Proposal>(bytes);
    let _ = decode::<Result<AppendEntriesResponse<u64>, String>>(bytes);
    let _ = decode::<Result<VoteResponse<u64>, String>>(bytes);
}

fn proposal(body: &[u8], key: &str) -> Proposal {
    let publish = Command::Publish {
        vhost: VHost::from("/"),
        mandatory: true,
        message: Arc::new(Message {
            exchange: ExchangeName::from("amq.topic"),
            routing_key: key.to_owned(),
            properties: Arc::new(Properties {
                delivery_mode: Some(2),
                priority: Some(9),
                ..Properties::default()
            }),
            body: Bytes::copy_from_slice(body).into(),
        }),
    };
    let declare = Command::DeclareQueue {
        vhost: VHost::from("/"),
        name: QueueName::from(key),
        passive: false,
        durable: true,
        exclusive: false,
        auto_delete: false,
        arguments: amq_protocol_types::FieldTable::default(),
    };
    Proposal {
        tag: None,
        batch: Batch {
            now_ms: 1,
            requests: vec![
                Request {
                    origin: None,
                    command: declare,
                },
                Request {
                    origin: None,
                    command: publish,
                },
            ],
        },
    }
}

/// Valid payloads of each kind the service decodes.
fn valid_payloads(body: &[u8], key: &str) -> Vec<Vec<u8>> {
    let log_id = LogId::new(CommittedLeaderId::new(3, 1), 7);
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(3, 1),
        prev_log_id: Some(log_id),
        entries: vec![Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), 8),
            payload: EntryPayload::Normal(proposal(body, key)),
        }],
        leader_commit: Some(log_id),
    };
    let vote = VoteRequest::<u64> {
        vote: Vote::new(4, 2),
        last_log_id: Some(log_id),
    };
    vec![
        encode(&append).expect("append"),
        encode(&vote).expect("vote"),
        encode(&proposal(body, key)).expect("proposal"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        decode_everything(&bytes);
        let mut versioned = vec![PAYLOAD_VERSION];
        versioned.extend_from_slice(&bytes);
        decode_everything(&versioned);
    }

    #[test]
    fn damaged_valid_payloads_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        key in "\\PC{0,40}",
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        for payload in valid_payloads(&body, &key) {
            decode_everything(&payload);
            decode_everything(&payload[..cut.index(payload.len() + 1)]);
            let mut changed = payload.clone();
            for (at, byte) in &flips {
                let i = at.index(changed.len());
                changed[i] ^= byte | 1;
            }
            decode_everything(&changed);
        }
    }
}

/// A length prefix claiming far more than the payload holds is an error,
/// not an allocation of that size.
#[test]
fn a_huge_length_prefix_is_refused_without_allocating_it() {
    let mut payload = valid_payloads(b"x", "k").remove(2);
    // The proposal's batch: `tag: None` (1 byte), `now_ms` (8), then the
    // length of the request vector.
    let at = 1 + 1 + 8;
    let count = u64::from_le_bytes(payload[at..at + 8].try_into().expect("8 bytes"));
    assert_eq!(count, 2, "the request count is where the test changes it");
    payload[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    assert!(decode::<Proposal>(&payload).is_err());
}
