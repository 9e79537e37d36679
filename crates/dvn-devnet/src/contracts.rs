//! Bindings for the deploy, wiring and executor calls only the devnet makes.
//!
//! The node's own bindings live in `dvn_lz::contracts`; these cover constructors and owner /
//! admin set-up calls. The `abi` integration test checks every selector here against the real
//! artifacts, as it does for `dvn_lz`.

#![allow(missing_docs)]

use alloy::sol;

sol! {
    #[derive(Debug)]
    struct Origin {
        uint32 srcEid;
        bytes32 sender;
        uint64 nonce;
    }

    #[derive(Debug)]
    struct UlnConfig {
        uint64 confirmations;
        uint8 requiredDVNCount;
        uint8 optionalDVNCount;
        uint8 optionalDVNThreshold;
        address[] requiredDVNs;
        address[] optionalDVNs;
    }

    struct SetDefaultUlnConfigParam {
        uint32 eid;
        UlnConfig config;
    }

    struct ExecutorConfig {
        uint32 maxMessageSize;
        address executor;
    }

    struct SetDefaultExecutorConfigParam {
        uint32 eid;
        ExecutorConfig config;
    }

    struct SetConfigParam {
        uint32 eid;
        uint32 configType;
        bytes config;
    }

    struct Price {
        uint128 priceRatio;
        uint64 gasPriceInUnit;
        uint32 gasPerByte;
    }

    struct UpdatePrice {
        uint32 eid;
        Price price;
    }

    struct ExecutorDstConfigParam {
        uint32 dstEid;
        uint64 lzReceiveBaseGas;
        uint64 lzComposeBaseGas;
        uint16 multiplierBps;
        uint128 floorMarginUSD;
        uint128 nativeCap;
    }

    struct DvnDstConfigParam {
        uint32 dstEid;
        uint64 gas;
        uint16 multiplierBps;
        uint128 floorMarginUSD;
    }

    contract EndpointV2 {
        constructor(uint32 _eid, address _owner);
        function registerLibrary(address _lib) external;
        function setDefaultSendLibrary(uint32 _eid, address _newLib) external;
        function setDefaultReceiveLibrary(uint32 _eid, address _newLib, uint256 _gracePeriod) external;
        function setConfig(address _oapp, address _lib, SetConfigParam[] _params) external;
        function lzReceive(Origin _origin, address _receiver, bytes32 _guid, bytes _message, bytes _extraData) external payable;
        function setSendLibrary(address _oapp, uint32 _eid, address _newLib) external;
        function skip(address _oapp, uint32 _srcEid, bytes32 _sender, uint64 _nonce) external;
    }

    contract SimpleMessageLib {
        constructor(address _endpoint, address _treasury);
    }

    contract SendUln302 {
        constructor(address _endpoint, uint256 _treasuryGasLimit, uint256 _treasuryGasForFeeCap);
        function setTreasury(address _treasury) external;
        function setDefaultUlnConfigs(SetDefaultUlnConfigParam[] _params) external;
        function setDefaultExecutorConfigs(SetDefaultExecutorConfigParam[] _params) external;
    }

    contract ReceiveUln302 {
        constructor(address _endpoint);
        function setDefaultUlnConfigs(SetDefaultUlnConfigParam[] _params) external;
    }

    contract ReceiveUln302View {
        function initialize(address _endpoint, address _receiveUln302) external;
    }

    contract Treasury {
        function setNativeFeeBP(uint256 _nativeBP) external;
    }

    contract PriceFeed {
        function initialize(address _priceUpdater) external;
        function setPrice(UpdatePrice[] _price) external;
        function setNativeTokenPriceUSD(uint128 _nativeTokenPriceUSD) external;
        function getPriceRatioDenominator() external view returns (uint128);
    }

    contract Executor {
        function initialize(address _endpoint, address _receiveUln301, address[] _messageLibs, address _priceFeed, address _roleAdmin, address[] _admins) external;
        function setWorkerFeeLib(address _workerFeeLib) external;
        function setDstConfig(ExecutorDstConfigParam[] _params) external;
    }

    contract ExecutorFeeLib {
        constructor(uint32 _localEidV2, uint256 _nativeDecimalsRate);
    }

    contract DVN {
        constructor(uint32 _localEidV2, uint32 _vid, address[] _messageLibs, address _priceFeed, address[] _signers, uint64 _quorum, address[] _admins);
        function setWorkerFeeLib(address _workerFeeLib) external;
        function setDstConfig(DvnDstConfigParam[] _params) external;
    }

    /// `DVNDecompressor`'s constructor arguments (indexes for its DVNs and targets).
    struct DecompressorDvn {
        uint16 idx;
        address addr;
    }

    struct DecompressorTarget {
        uint8 idx;
        address addr;
    }

    contract DVNDecompressor {
        constructor(uint32 _vid, DecompressorDvn[] _dvns, DecompressorTarget[] _targets);
    }

    contract DVNFeeLib {
        constructor(uint32 _localEidV2, uint256 _nativeDecimalsRate);
    }

    contract OmniCounter {
        constructor(address _endpoint, address _delegate);
        function increment(uint32 _eid, uint8 _type, bytes _options) external payable;
        function quote(uint32 _eid, uint8 _type, bytes _options) external view returns (uint256 nativeFee, uint256 lzTokenFee);
        function count() external view returns (uint256);
        function setPeer(uint32 _eid, bytes32 _peer) external;
    }
}

/// `EndpointV2.setConfig` config type for a ULN config (the only one ReceiveUln302 accepts).
pub const CONFIG_TYPE_ULN: u32 = 2;

/// OmniCounter's plain increment message type.
pub const COUNTER_VANILLA: u8 = 1;
/// OmniCounter's composed message type: a different payload from the vanilla one.
pub const COUNTER_COMPOSED: u8 = 2;
