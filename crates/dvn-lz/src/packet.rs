//! LayerZero V2 `PacketV1Codec`: the bytes `EndpointV2` emits in `PacketSent.encodedPayload`.
//!
//! Layout (big-endian, packed): `version(1) ‖ nonce(8) ‖ srcEid(4) ‖ sender(32) ‖ dstEid(4) ‖
//! receiver(32)` — the 81-byte *header* — then `guid(32) ‖ message`. The *payload* is
//! `guid ‖ message` and `payloadHash = keccak256(payload)`.
//!
//! This module is the single gate for packet bytes that come from a chain: [`Packet::decode`]
//! validates everything a DVN must check before it signs (the on-chain `verify` checks none of
//! it), and returns a typed [`PacketError`] instead of panicking on any input.

use alloy_primitives::{keccak256, Address, Bytes, B256};

/// The only packet version LayerZero V2 emits.
pub const PACKET_VERSION: u8 = 1;
/// Length of the packet header passed to `ReceiveUln302.verify`.
pub const HEADER_LEN: usize = 81;
/// Length of header plus GUID: the smallest valid packet (empty message).
pub const MIN_PACKET_LEN: usize = HEADER_LEN + 32;

const NONCE_AT: usize = 1;
const SRC_EID_AT: usize = 9;
const SENDER_AT: usize = 13;
const DST_EID_AT: usize = 45;
const RECEIVER_AT: usize = 49;

/// Why bytes are not a valid V1 packet or header.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    #[error("packet too short: {len} bytes, need at least {min}")]
    TooShort { len: usize, min: usize },
    #[error("packet header must be exactly {HEADER_LEN} bytes, got {0}")]
    HeaderLength(usize),
    #[error("unsupported packet version {0}, expected {PACKET_VERSION}")]
    Version(u8),
    #[error("nonce 0 is not a valid packet nonce (nonces start at 1)")]
    ZeroNonce,
    #[error("{field} is 0, which no endpoint uses")]
    ZeroEid { field: &'static str },
    #[error("source and destination eid are both {0}")]
    SameEid(u32),
    #[error("GUID {actual} does not match the header (expected {expected})")]
    GuidMismatch { expected: B256, actual: B256 },
    #[error("{field} {value} is not a left-padded EVM address")]
    NotAnAddress { field: &'static str, value: B256 },
}

/// The 81-byte header: everything `ReceiveUln302.verify` binds a verification to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketHeader {
    pub nonce: u64,
    pub src_eid: u32,
    pub sender: B256,
    pub dst_eid: u32,
    pub receiver: B256,
}

impl PacketHeader {
    /// Decodes and validates exactly [`HEADER_LEN`] bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, PacketError> {
        if bytes.len() != HEADER_LEN {
            return Err(PacketError::HeaderLength(bytes.len()));
        }
        Self::decode_prefix(bytes)
    }

    /// Decodes the header at the start of `bytes` (which holds at least [`HEADER_LEN`] bytes).
    fn decode_prefix(bytes: &[u8]) -> Result<Self, PacketError> {
        let field = |at: usize, len: usize| &bytes[at..at + len];
        let version = bytes[0];
        if version != PACKET_VERSION {
            return Err(PacketError::Version(version));
        }
        let header = Self {
            nonce: u64::from_be_bytes(to_array(field(NONCE_AT, 8))),
            src_eid: u32::from_be_bytes(to_array(field(SRC_EID_AT, 4))),
            sender: B256::from_slice(field(SENDER_AT, 32)),
            dst_eid: u32::from_be_bytes(to_array(field(DST_EID_AT, 4))),
            receiver: B256::from_slice(field(RECEIVER_AT, 32)),
        };
        header.validate()?;
        Ok(header)
    }

    fn validate(&self) -> Result<(), PacketError> {
        if self.nonce == 0 {
            return Err(PacketError::ZeroNonce);
        }
        if self.src_eid == 0 {
            return Err(PacketError::ZeroEid { field: "srcEid" });
        }
        if self.dst_eid == 0 {
            return Err(PacketError::ZeroEid { field: "dstEid" });
        }
        if self.src_eid == self.dst_eid {
            return Err(PacketError::SameEid(self.src_eid));
        }
        Ok(())
    }

    /// The header bytes, as passed to `verify` and hashed into `hashLookup`.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = PACKET_VERSION;
        out[NONCE_AT..SRC_EID_AT].copy_from_slice(&self.nonce.to_be_bytes());
        out[SRC_EID_AT..SENDER_AT].copy_from_slice(&self.src_eid.to_be_bytes());
        out[SENDER_AT..DST_EID_AT].copy_from_slice(self.sender.as_slice());
        out[DST_EID_AT..RECEIVER_AT].copy_from_slice(&self.dst_eid.to_be_bytes());
        out[RECEIVER_AT..].copy_from_slice(self.receiver.as_slice());
        out
    }

    /// `keccak256(header)`: the first key of `ReceiveUln302.hashLookup`.
    pub fn hash(&self) -> B256 {
        keccak256(self.encode())
    }

    /// The GUID the endpoint derives: `keccak256(nonce ‖ srcEid ‖ sender ‖ dstEid ‖ receiver)`.
    pub fn guid(&self) -> B256 {
        // The GUID preimage is the header without its version byte.
        keccak256(&self.encode()[1..])
    }

    /// The sender as an EVM address (every EVM endpoint left-pads `msg.sender`).
    pub fn sender_address(&self) -> Result<Address, PacketError> {
        bytes32_to_address("sender", self.sender)
    }

    /// The receiver as an EVM address; an EVM destination cannot deliver to anything else.
    pub fn receiver_address(&self) -> Result<Address, PacketError> {
        bytes32_to_address("receiver", self.receiver)
    }
}

/// A decoded, validated V1 packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub header: PacketHeader,
    pub guid: B256,
    pub message: Bytes,
}

impl Packet {
    /// Builds a packet the way `EndpointV2.send` does, deriving the GUID from the header.
    pub fn new(header: PacketHeader, message: impl Into<Bytes>) -> Self {
        Self {
            guid: header.guid(),
            header,
            message: message.into(),
        }
    }

    /// Decodes `PacketSent.encodedPayload`. Rejects short input, a wrong version, zero or
    /// equal eids, nonce 0, and a GUID that does not match the header.
    pub fn decode(bytes: &[u8]) -> Result<Self, PacketError> {
        if bytes.len() < MIN_PACKET_LEN {
            return Err(PacketError::TooShort {
                len: bytes.len(),
                min: MIN_PACKET_LEN,
            });
        }
        let header = PacketHeader::decode_prefix(bytes)?;
        let guid = B256::from_slice(&bytes[HEADER_LEN..MIN_PACKET_LEN]);
        let expected = header.guid();
        if guid != expected {
            return Err(PacketError::GuidMismatch {
                expected,
                actual: guid,
            });
        }
        Ok(Self {
            header,
            guid,
            message: Bytes::copy_from_slice(&bytes[MIN_PACKET_LEN..]),
        })
    }

    /// The full encoded packet, byte-identical to `PacketSent.encodedPayload`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(MIN_PACKET_LEN + self.message.len());
        out.extend_from_slice(&self.header.encode());
        out.extend_from_slice(self.guid.as_slice());
        out.extend_from_slice(&self.message);
        out
    }

    /// `guid ‖ message`.
    pub fn payload(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.message.len());
        out.extend_from_slice(self.guid.as_slice());
        out.extend_from_slice(&self.message);
        out
    }

    /// `keccak256(guid ‖ message)`: what the DVN attests to, and what the endpoint stores.
    pub fn payload_hash(&self) -> B256 {
        keccak256(self.payload())
    }
}

fn bytes32_to_address(field: &'static str, value: B256) -> Result<Address, PacketError> {
    if value[..12].iter().any(|b| *b != 0) {
        return Err(PacketError::NotAnAddress { field, value });
    }
    Ok(Address::from_slice(&value[12..]))
}

/// Copies a slice whose length the caller has already checked into an array.
fn to_array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(bytes);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{address, b256, hex};
    use proptest::prelude::*;

    // The probe's first packet (layerzero-v2.md §2.2): nonce 1, 30101 → 30212, OmniCounter.
    const PROBE_HEADER: &str = "01000000000000000100007595\
        0000000000000000000000004ed7c70f96b99c776995fb64377f0d4ab3b0e1c1\
        000076040000000000000000000000001e2f4432bfef9e9ad39da6d272f4aff33629c770";
    const PROBE_GUID: B256 =
        b256!("10c2026ca40bd03cdf44737444caa48503ca00d28c30c277e9f1cdad647420b0");
    const PROBE_PAYLOAD_HASH: B256 =
        b256!("0b7dfbd6925c295827f0a14ea97743d03c8b3d6564b35b933673833f12f8fa57");

    fn probe_packet_bytes() -> Vec<u8> {
        let mut bytes = hex::decode(PROBE_HEADER).unwrap();
        bytes.extend_from_slice(PROBE_GUID.as_slice());
        bytes.extend_from_slice(&hex::decode("0100007595").unwrap());
        bytes
    }

    #[test]
    fn decodes_the_probe_packet_golden_vector() {
        let packet = Packet::decode(&probe_packet_bytes()).unwrap();
        assert_eq!(packet.header.nonce, 1);
        assert_eq!(packet.header.src_eid, 30101);
        assert_eq!(packet.header.dst_eid, 30212);
        assert_eq!(
            packet.header.sender_address().unwrap(),
            address!("4ed7c70f96b99c776995fb64377f0d4ab3b0e1c1")
        );
        assert_eq!(
            packet.header.receiver_address().unwrap(),
            address!("1e2f4432bfef9e9ad39da6d272f4aff33629c770")
        );
        assert_eq!(packet.guid, PROBE_GUID);
        assert_eq!(packet.header.guid(), PROBE_GUID);
        assert_eq!(packet.payload_hash(), PROBE_PAYLOAD_HASH);
        assert_eq!(
            packet.message.as_ref(),
            hex::decode("0100007595").unwrap().as_slice()
        );
        assert_eq!(hex::encode(packet.header.encode()), PROBE_HEADER);
        assert_eq!(packet.encode(), probe_packet_bytes());
    }

    #[test]
    fn rejects_each_malformation_with_its_own_error() {
        let good = probe_packet_bytes();
        assert_eq!(
            Packet::decode(&good[..112]),
            Err(PacketError::TooShort {
                len: 112,
                min: MIN_PACKET_LEN
            })
        );
        assert_eq!(
            Packet::decode(&[]),
            Err(PacketError::TooShort { len: 0, min: 113 })
        );

        let mut wrong_version = good.clone();
        wrong_version[0] = 2;
        assert_eq!(Packet::decode(&wrong_version), Err(PacketError::Version(2)));

        let mut bad_guid = good.clone();
        bad_guid[HEADER_LEN] ^= 1;
        assert!(matches!(
            Packet::decode(&bad_guid),
            Err(PacketError::GuidMismatch { .. })
        ));

        let header = PacketHeader::decode(&good[..HEADER_LEN]).unwrap();
        let reencode = |h: PacketHeader| Packet::new(h, Bytes::new()).encode();
        let cases = [
            (PacketHeader { nonce: 0, ..header }, PacketError::ZeroNonce),
            (
                PacketHeader {
                    src_eid: 0,
                    ..header
                },
                PacketError::ZeroEid { field: "srcEid" },
            ),
            (
                PacketHeader {
                    dst_eid: 0,
                    ..header
                },
                PacketError::ZeroEid { field: "dstEid" },
            ),
            (
                PacketHeader {
                    dst_eid: 30101,
                    ..header
                },
                PacketError::SameEid(30101),
            ),
        ];
        for (bad, expected) in cases {
            assert_eq!(Packet::decode(&reencode(bad)), Err(expected));
        }
        assert_eq!(
            PacketHeader::decode(&good[..80]),
            Err(PacketError::HeaderLength(80))
        );
        assert_eq!(
            PacketHeader::decode(&good[..82]),
            Err(PacketError::HeaderLength(82))
        );
    }

    #[test]
    fn a_non_address_receiver_is_reported_not_truncated() {
        let mut header = PacketHeader::decode(&probe_packet_bytes()[..HEADER_LEN]).unwrap();
        header.receiver = B256::repeat_byte(0xab);
        assert!(matches!(
            header.receiver_address(),
            Err(PacketError::NotAnAddress {
                field: "receiver",
                ..
            })
        ));
    }

    fn arb_header() -> impl Strategy<Value = PacketHeader> {
        (1u64.., 1u32.., any::<[u8; 32]>(), 1u32.., any::<[u8; 32]>())
            .prop_filter("distinct eids", |(_, s, _, d, _)| s != d)
            .prop_map(|(nonce, src_eid, sender, dst_eid, receiver)| PacketHeader {
                nonce,
                src_eid,
                sender: sender.into(),
                dst_eid,
                receiver: receiver.into(),
            })
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(header in arb_header(), message in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let packet = Packet::new(header, message);
            let bytes = packet.encode();
            prop_assert_eq!(Packet::decode(&bytes), Ok(packet.clone()));
            prop_assert_eq!(PacketHeader::decode(&bytes[..HEADER_LEN]), Ok(header));
            prop_assert_eq!(packet.payload_hash(), keccak256(&bytes[HEADER_LEN..]));
        }

        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
            // Either a typed error, or a packet that re-encodes to exactly the input.
            if let Ok(packet) = Packet::decode(&bytes) {
                prop_assert_eq!(packet.encode(), bytes.clone());
            }
            let _ = PacketHeader::decode(&bytes);
        }

        #[test]
        fn random_bytes_with_a_valid_prefix_never_panic(
            header in arb_header(),
            tail in proptest::collection::vec(any::<u8>(), 0..64),
            cut in 0usize..200,
        ) {
            let mut bytes = header.encode().to_vec();
            bytes.extend_from_slice(header.guid().as_slice());
            bytes.extend_from_slice(&tail);
            bytes.truncate(cut);
            match Packet::decode(&bytes) {
                Ok(p) => prop_assert_eq!(p.encode(), bytes),
                Err(e) => {
                    let too_short = matches!(e, PacketError::TooShort { .. });
                    prop_assert!(too_short, "unexpected error {:?}", e);
                }
            }
        }
    }
}
