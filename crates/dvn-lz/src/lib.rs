//! LayerZero V2 protocol core for the `dvn` node: no async, no I/O.
//!
//! - [`packet`]: the PacketV1 codec (header, GUID, payload hash) and its validation.
//! - [`contracts`]: `sol!` bindings for exactly the events and calls the node touches.
//! - [`assignment`]: pairing `PacketSent` with `DVNFeePaid`; "is this packet ours".
//! - [`multisig`]: the DVN `execute` hash, EIP-191 digest, signature normalisation and packing.
//! - [`options`]: type-3 executor options for sending test messages.
//! - [`compressed`]: the `DVNDecompressor`'s compact `execute` encoding.

pub mod assignment;
pub mod compressed;
pub mod contracts;
pub mod multisig;
pub mod options;
pub mod packet;

pub use assignment::{packets_in_transaction, sent_packets, AssignmentError, SentPacket};
pub use contracts::VerificationState;
pub use multisig::{SignatureError, SignatureSet, UnsignedParam};
pub use packet::{Packet, PacketError, PacketHeader};
