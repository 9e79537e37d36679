//! ABI bindings for exactly the parts of the LayerZero V2 contracts the DVN node touches.
//!
//! Declared by hand with `sol!` (not generated from the npm artifacts) so this crate builds
//! without the artifacts present; `dvn-devnet`'s `abi` integration test checks every selector
//! and topic declared here against the real artifacts' ABIs, so a typo cannot survive CI.
//! No `#[sol(rpc)]`: this crate does no I/O; callers encode calls and decode logs themselves.

use alloy_sol_types::sol;

sol! {
    /// `(srcEid, sender, nonce)`: how the endpoint identifies an inbound packet.
    #[derive(Debug, PartialEq, Eq)]
    struct Origin {
        uint32 srcEid;
        bytes32 sender;
        uint64 nonce;
    }

    /// The effective (default merged with per-OApp) ULN configuration for one path.
    #[derive(Debug, PartialEq, Eq)]
    struct UlnConfig {
        uint64 confirmations;
        uint8 requiredDVNCount;
        uint8 optionalDVNCount;
        uint8 optionalDVNThreshold;
        address[] requiredDVNs;
        address[] optionalDVNs;
    }

    /// One multisig-authorised call, as `DVN.execute` takes it.
    #[derive(Debug, PartialEq, Eq)]
    struct ExecuteParam {
        uint32 vid;
        address target;
        bytes callData;
        uint256 expiration;
        bytes signatures;
    }

    /// Source and destination endpoint.
    interface IEndpointV2 {
        event PacketSent(bytes encodedPayload, bytes options, address sendLibrary);
        event PacketVerified(Origin origin, address receiver, bytes32 payloadHash);
        event PacketDelivered(Origin origin, address receiver);

        function eid() external view returns (uint32);
        function isRegisteredLibrary(address lib) external view returns (bool);
        function outboundNonce(address sender, uint32 dstEid, bytes32 receiver) external view returns (uint64);
        function inboundNonce(address receiver, uint32 srcEid, bytes32 sender) external view returns (uint64);
        function lazyInboundNonce(address receiver, uint32 srcEid, bytes32 sender) external view returns (uint64);
        function inboundPayloadHash(address receiver, uint32 srcEid, bytes32 sender, uint64 nonce) external view returns (bytes32);
    }

    /// Source-side message library: tells which DVNs a packet was assigned to.
    interface ISendUln302 {
        event DVNFeePaid(address[] requiredDVNs, address[] optionalDVNs, uint256[] fees);
        event ExecutorFeePaid(address executor, uint256 fee);

        function getUlnConfig(address oapp, uint32 remoteEid) external view returns (UlnConfig memory rtnConfig);
    }

    /// Destination-side message library: where a DVN's verification lands.
    interface IReceiveUln302 {
        event PayloadVerified(address dvn, bytes header, uint256 confirmations, bytes32 proofHash);

        function verify(bytes calldata packetHeader, bytes32 payloadHash, uint64 confirmations) external;
        function commitVerification(bytes calldata packetHeader, bytes32 payloadHash) external;
        function getUlnConfig(address oapp, uint32 remoteEid) external view returns (UlnConfig memory rtnConfig);
        function hashLookup(bytes32 headerHash, bytes32 payloadHash, address dvn) external view returns (bool submitted, uint64 confirmations);
    }

    /// `ReceiveUln302View.verifiable`: 0 Verifying, 1 Verifiable, 2 Verified, 3 NotInitializable.
    interface IReceiveUln302View {
        function verifiable(bytes calldata packetHeader, bytes32 payloadHash) external view returns (uint8);
    }

    /// The DVN worker contract: a quorum multisig that calls `verify` for us.
    interface IDVN {
        event VerifySignaturesFailed(uint256 idx);
        event ExecuteFailed(uint256 idx, bytes data);
        event HashAlreadyUsed(ExecuteParam param, bytes32 hash);
        event UpdateSigner(address _signer, bool _active);
        event UpdateQuorum(uint64 _quorum);
        event RoleGranted(bytes32 indexed role, address indexed account, address indexed sender);
        event RoleRevoked(bytes32 indexed role, address indexed account, address indexed sender);

        function execute(ExecuteParam[] calldata params) external payable;
        function hashCallData(uint32 vid, address target, bytes calldata callData, uint256 expiration) external pure returns (bytes32);
        function verifySignatures(bytes32 hash, bytes calldata signatures) external view returns (bool, uint8);
        function getSigners() external view returns (address[] memory);
        function isSigner(address signer) external view returns (bool);
        function quorum() external view returns (uint64);
        function vid() external view returns (uint32);
        function hasRole(bytes32 role, address account) external view returns (bool);
        function grantRole(bytes32 role, address account) external;
        function revokeRole(bytes32 role, address account) external;
        /// `onlySelf`: reached only through `execute` with a quorum of signatures.
        function setSigner(address signer, bool active) external;
        function usedHashes(bytes32 executableHash) external view returns (bool);
    }
}

/// `keccak256("ADMIN_ROLE")`: the role `DVN.execute` requires of its caller.
pub const ADMIN_ROLE: alloy_primitives::B256 =
    alloy_primitives::b256!("a49807205ce4d355092ef5a8a18f56e8913cf4a201fbe287825b095693c21775");

/// The states `ReceiveUln302View.verifiable` reports for a packet on the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerificationState {
    /// Not enough DVN verifications (with enough confirmations) yet.
    Verifying,
    /// Ready for `commitVerification`.
    Verifiable,
    /// Committed to the endpoint, or already delivered.
    Verified,
    /// The receiver does not accept this path.
    NotInitializable,
}

impl VerificationState {
    /// Maps the view's `uint8`; `None` for a value the contract never returns.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Verifying,
            1 => Self::Verifiable,
            2 => Self::Verified,
            3 => Self::NotInitializable,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::{b256, keccak256};
    use alloy_sol_types::{SolCall, SolEvent};

    // Reference values from layerzero-v2.md §8, which were read from the package ABIs.
    // The full cross-check against the artifacts lives in dvn-devnet's `abi` test.
    #[test]
    fn selectors_and_topics_match_the_protocol_fact_sheet() {
        assert_eq!(
            IReceiveUln302::verifyCall::SELECTOR,
            [0x02, 0x23, 0x53, 0x6e]
        );
        assert_eq!(
            IReceiveUln302::commitVerificationCall::SELECTOR,
            [0x08, 0x94, 0xed, 0xf1]
        );
        assert_eq!(IDVN::executeCall::SELECTOR, [0xb1, 0x43, 0x04, 0x4b]);
        assert_eq!(IDVN::hashCallDataCall::SELECTOR, [0xf0, 0x10, 0xcb, 0x23]);
        assert_eq!(
            IDVN::verifySignaturesCall::SELECTOR,
            [0xc7, 0xa8, 0x23, 0xe0]
        );
        assert_eq!(
            IReceiveUln302::hashLookupCall::SELECTOR,
            [0x3c, 0x78, 0x2a, 0x52]
        );
        assert_eq!(
            IReceiveUln302::getUlnConfigCall::SELECTOR,
            [0x43, 0xea, 0x4f, 0xa9]
        );
        assert_eq!(
            IReceiveUln302View::verifiableCall::SELECTOR,
            [0x27, 0xd1, 0x2c, 0xd9]
        );
        assert_eq!(
            IEndpointV2::PacketSent::SIGNATURE_HASH,
            b256!("1ab700d4ced0c005b164c0f789fd09fcbb0156d4c2041b8a3bfbcd961cd1567f")
        );
        assert_eq!(
            ISendUln302::DVNFeePaid::SIGNATURE_HASH,
            b256!("07ea52d82345d6e838192107d8fd7123d9c2ec8e916cd0aad13fd2b60db24644")
        );
        assert_eq!(
            IReceiveUln302::PayloadVerified::SIGNATURE_HASH,
            b256!("2cb0eed7538baeae4c6fde038c0fd0384d27de0dd55a228c65847bda6aa1ab56")
        );
        assert_eq!(ADMIN_ROLE, keccak256("ADMIN_ROLE"));
    }

    #[test]
    fn verification_state_maps_every_contract_value() {
        assert_eq!(
            VerificationState::from_u8(0),
            Some(VerificationState::Verifying)
        );
        assert_eq!(
            VerificationState::from_u8(1),
            Some(VerificationState::Verifiable)
        );
        assert_eq!(
            VerificationState::from_u8(2),
            Some(VerificationState::Verified)
        );
        assert_eq!(
            VerificationState::from_u8(3),
            Some(VerificationState::NotInitializable)
        );
        assert_eq!(VerificationState::from_u8(4), None);
    }
}
