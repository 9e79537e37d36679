//! Which packets in a source transaction are assigned to a DVN.
//!
//! `SendUln302.send` emits `DVNFeePaid(required, optional, fees)` and then `EndpointV2` emits
//! `PacketSent(packet, options, sendLibrary)`; neither has indexed fields, and a transaction
//! may hold several sends. A `PacketSent` is paired with the nearest *preceding* `DVNFeePaid`
//! emitted by its `sendLibrary` that no earlier `PacketSent` already claimed. The DVN lists in
//! that event are the config actually used for the packet, so they are authoritative.

use alloy_primitives::{Address, Bytes, Log};
use alloy_sol_types::SolEvent;

use crate::contracts::{IEndpointV2, ISendUln302};
use crate::packet::{Packet, PacketError};

/// A packet found in a source transaction, with the DVNs it was assigned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentPacket {
    pub packet: Packet,
    pub options: Bytes,
    pub send_library: Address,
    pub required_dvns: Vec<Address>,
    pub optional_dvns: Vec<Address>,
    /// Position of the `PacketSent` log in the slice given to [`packets_in_transaction`].
    pub log_position: usize,
}

impl SentPacket {
    /// True when `dvn` (the *source-chain* DVN contract) is a required or optional DVN.
    pub fn is_assigned_to(&self, dvn: Address) -> bool {
        self.required_dvns.contains(&dvn) || self.optional_dvns.contains(&dvn)
    }
}

/// Why a `PacketSent` log from the endpoint could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssignmentError {
    #[error("log {position}: undecodable {event} event: {reason}")]
    Event {
        position: usize,
        event: &'static str,
        reason: String,
    },
    #[error("log {position}: invalid packet: {source}")]
    Packet {
        position: usize,
        source: PacketError,
    },
    #[error(
        "log {position}: no unclaimed DVNFeePaid from send library {send_library} precedes it"
    )]
    NoFeeEvent {
        position: usize,
        send_library: Address,
    },
}

/// Finds every `PacketSent` emitted by `endpoint` in `logs` (one transaction's logs, in log
/// index order) and pairs it with its `DVNFeePaid`. Logs from other contracts are ignored;
/// each bad `PacketSent` yields an error in its place, so one bad log never hides the rest.
pub fn packets_in_transaction(
    endpoint: Address,
    logs: &[Log],
) -> Vec<Result<SentPacket, AssignmentError>> {
    let mut claimed = vec![false; logs.len()];
    let mut out = Vec::new();
    for (position, log) in logs.iter().enumerate() {
        if log.address != endpoint
            || log.topics().first() != Some(&IEndpointV2::PacketSent::SIGNATURE_HASH)
        {
            continue;
        }
        out.push(pair(position, log, logs, &mut claimed));
    }
    out
}

/// The packet of every `PacketSent` emitted by `endpoint` in `logs`, through any send library
/// and whether or not it can be paired with a fee event: what per-path nonce counting needs.
/// Each undecodable one yields an error in its place.
pub fn sent_packets(endpoint: Address, logs: &[Log]) -> Vec<Result<Packet, AssignmentError>> {
    logs.iter()
        .enumerate()
        .filter(|(_, log)| {
            log.address == endpoint
                && log.topics().first() == Some(&IEndpointV2::PacketSent::SIGNATURE_HASH)
        })
        .map(|(position, log)| decode_packet_sent(position, log).map(|(_, packet)| packet))
        .collect()
}

fn decode_packet_sent(
    position: usize,
    log: &Log,
) -> Result<(IEndpointV2::PacketSent, Packet), AssignmentError> {
    let sent = IEndpointV2::PacketSent::decode_log_data(&log.data).map_err(|e| {
        AssignmentError::Event {
            position,
            event: "PacketSent",
            reason: e.to_string(),
        }
    })?;
    let packet = Packet::decode(&sent.encodedPayload)
        .map_err(|source| AssignmentError::Packet { position, source })?;
    Ok((sent, packet))
}

fn pair(
    position: usize,
    log: &Log,
    logs: &[Log],
    claimed: &mut [bool],
) -> Result<SentPacket, AssignmentError> {
    let (sent, packet) = decode_packet_sent(position, log)?;
    let fee_position = (0..position)
        .rev()
        .find(|&i| {
            !claimed[i]
                && logs[i].address == sent.sendLibrary
                && logs[i].topics().first() == Some(&ISendUln302::DVNFeePaid::SIGNATURE_HASH)
        })
        .ok_or(AssignmentError::NoFeeEvent {
            position,
            send_library: sent.sendLibrary,
        })?;
    claimed[fee_position] = true;
    let fee = ISendUln302::DVNFeePaid::decode_log_data(&logs[fee_position].data).map_err(|e| {
        AssignmentError::Event {
            position: fee_position,
            event: "DVNFeePaid",
            reason: e.to_string(),
        }
    })?;
    Ok(SentPacket {
        packet,
        options: sent.options,
        send_library: sent.sendLibrary,
        required_dvns: fee.requiredDVNs,
        optional_dvns: fee.optionalDVNs,
        log_position: position,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::PacketHeader;
    use alloy_primitives::{address, B256, U256};

    const ENDPOINT: Address = address!("00000000000000000000000000000000000000e0");
    const LIB: Address = address!("00000000000000000000000000000000000000aa");
    const OTHER_LIB: Address = address!("00000000000000000000000000000000000000bb");
    const OUR_DVN: Address = address!("00000000000000000000000000000000000000d1");
    const THEIR_DVN: Address = address!("00000000000000000000000000000000000000d2");

    fn packet(nonce: u64) -> Packet {
        Packet::new(
            PacketHeader {
                nonce,
                src_eid: 30101,
                sender: B256::left_padding_from(&[1; 20]),
                dst_eid: 30212,
                receiver: B256::left_padding_from(&[2; 20]),
            },
            vec![nonce as u8],
        )
    }

    fn fee_log(lib: Address, required: Vec<Address>) -> Log {
        let event = ISendUln302::DVNFeePaid {
            requiredDVNs: required.clone(),
            optionalDVNs: vec![],
            fees: vec![U256::from(1u8); required.len()],
        };
        Log {
            address: lib,
            data: event.encode_log_data(),
        }
    }

    fn sent_log(packet: &Packet, lib: Address) -> Log {
        let event = IEndpointV2::PacketSent {
            encodedPayload: packet.encode().into(),
            options: Bytes::new(),
            sendLibrary: lib,
        };
        Log {
            address: ENDPOINT,
            data: event.encode_log_data(),
        }
    }

    #[test]
    fn pairs_each_send_with_its_own_fee_event_in_a_multi_send_transaction() {
        let logs = vec![
            fee_log(LIB, vec![OUR_DVN]),
            sent_log(&packet(1), LIB),
            fee_log(LIB, vec![THEIR_DVN]),
            sent_log(&packet(2), LIB),
        ];
        let found: Vec<_> = packets_in_transaction(ENDPOINT, &logs)
            .into_iter()
            .map(|r| r.unwrap())
            .collect();
        assert_eq!(found.len(), 2);
        assert!(found[0].is_assigned_to(OUR_DVN));
        assert!(!found[1].is_assigned_to(OUR_DVN));
        assert_eq!(found[1].packet, packet(2));
        assert_eq!(found[1].log_position, 3);
    }

    #[test]
    fn a_fee_event_from_another_library_or_already_claimed_does_not_count() {
        let logs = vec![
            fee_log(LIB, vec![OUR_DVN]),
            sent_log(&packet(1), LIB),
            fee_log(OTHER_LIB, vec![OUR_DVN]),
            sent_log(&packet(2), LIB),
        ];
        let found = packets_in_transaction(ENDPOINT, &logs);
        assert!(found[0].is_ok());
        assert_eq!(
            found[1],
            Err(AssignmentError::NoFeeEvent {
                position: 3,
                send_library: LIB
            })
        );
    }

    #[test]
    fn ignores_lookalike_logs_from_other_contracts_and_reports_bad_packets() {
        let mut forged = sent_log(&packet(1), LIB);
        forged.address = OTHER_LIB;
        let mut bad = packet(2).encode();
        bad[0] = 9;
        let bad_log = Log {
            address: ENDPOINT,
            data: IEndpointV2::PacketSent {
                encodedPayload: bad.into(),
                options: Bytes::new(),
                sendLibrary: LIB,
            }
            .encode_log_data(),
        };
        let logs = vec![fee_log(LIB, vec![OUR_DVN]), forged, bad_log];
        let found = packets_in_transaction(ENDPOINT, &logs);
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0],
            Err(AssignmentError::Packet {
                position: 2,
                source: PacketError::Version(9)
            })
        );
    }

    #[test]
    fn garbage_event_data_is_an_error_not_a_panic() {
        let mut log = sent_log(&packet(1), LIB);
        log.data = alloy_primitives::LogData::new_unchecked(
            log.data.topics().to_vec(),
            Bytes::from(vec![0xff; 7]),
        );
        let found = packets_in_transaction(ENDPOINT, &[fee_log(LIB, vec![OUR_DVN]), log]);
        assert!(matches!(
            found[0],
            Err(AssignmentError::Event {
                event: "PacketSent",
                ..
            })
        ));
    }

    #[test]
    fn every_packet_sent_is_counted_even_without_a_fee_event() {
        // A send through another message library emits PacketSent with no DVNFeePaid: it
        // cannot be paired, but its nonce is real and must be counted.
        let logs = vec![
            sent_log(&packet(1), OTHER_LIB),
            fee_log(LIB, vec![OUR_DVN]),
            sent_log(&packet(2), LIB),
        ];
        let paired = packets_in_transaction(ENDPOINT, &logs);
        assert!(matches!(paired[0], Err(AssignmentError::NoFeeEvent { .. })));
        let counted: Vec<u64> = sent_packets(ENDPOINT, &logs)
            .into_iter()
            .map(|p| p.unwrap().header.nonce)
            .collect();
        assert_eq!(counted, vec![1, 2]);
    }
}
