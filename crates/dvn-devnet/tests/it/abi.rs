//! Every selector and event topic the project declares with `sol!` exists in the real npm
//! artifacts' ABIs — for the node's bindings (`dvn_lz::contracts`) and the devnet's own.

use std::collections::HashSet;

use alloy::primitives::{FixedBytes, B256};
use dvn_devnet::artifacts::{Artifacts, Contract};
use dvn_devnet::contracts as devnet;
use dvn_lz::contracts as node;

struct Declared {
    name: &'static str,
    artifact: Contract,
    functions: &'static [[u8; 4]],
    events: &'static [[u8; 32]],
}

fn declared() -> Vec<Declared> {
    vec![
        Declared {
            name: "dvn_lz IEndpointV2",
            artifact: Contract::EndpointV2,
            functions: node::IEndpointV2::IEndpointV2Calls::SELECTORS,
            events: node::IEndpointV2::IEndpointV2Events::SELECTORS,
        },
        Declared {
            name: "dvn_lz ISendUln302",
            artifact: Contract::SendUln302,
            functions: node::ISendUln302::ISendUln302Calls::SELECTORS,
            events: node::ISendUln302::ISendUln302Events::SELECTORS,
        },
        Declared {
            name: "dvn_lz IReceiveUln302",
            artifact: Contract::ReceiveUln302,
            functions: node::IReceiveUln302::IReceiveUln302Calls::SELECTORS,
            events: node::IReceiveUln302::IReceiveUln302Events::SELECTORS,
        },
        Declared {
            name: "dvn_lz IReceiveUln302View",
            artifact: Contract::ReceiveUln302View,
            functions: node::IReceiveUln302View::IReceiveUln302ViewCalls::SELECTORS,
            events: &[],
        },
        Declared {
            name: "dvn_lz IDVN",
            artifact: Contract::Dvn,
            functions: node::IDVN::IDVNCalls::SELECTORS,
            events: node::IDVN::IDVNEvents::SELECTORS,
        },
        Declared {
            name: "dvn_lz IDVNDecompressor",
            artifact: Contract::DvnDecompressor,
            functions: dvn_lz::compressed::IDVNDecompressor::IDVNDecompressorCalls::SELECTORS,
            events: &[],
        },
        Declared {
            name: "devnet EndpointV2",
            artifact: Contract::EndpointV2,
            functions: devnet::EndpointV2::EndpointV2Calls::SELECTORS,
            events: &[],
        },
        Declared {
            name: "devnet SendUln302",
            artifact: Contract::SendUln302,
            functions: devnet::SendUln302::SendUln302Calls::SELECTORS,
            events: &[],
        },
        Declared {
            name: "devnet ReceiveUln302",
            artifact: Contract::ReceiveUln302,
            functions: devnet::ReceiveUln302::ReceiveUln302Calls::SELECTORS,
            events: &[],
        },
        Declared {
            name: "devnet ReceiveUln302View",
            artifact: Contract::ReceiveUln302View,
            functions: devnet::ReceiveUln302View::ReceiveUln302ViewCalls::SELECTORS,
            events: &[],
        },
        Declared {
            name: "devnet Treasury",
            artifact: Contract::Treasury,
            functions: devnet::Treasury::TreasuryCalls::SELECTORS,
            events: &[],
        },
        Declared {
            name: "devnet PriceFeed",
            artifact: Contract::PriceFeed,
            functions: devnet::PriceFeed::PriceFeedCalls::SELECTORS,
            events: &[],
        },
        Declared {
            name: "devnet Executor",
            artifact: Contract::Executor,
            functions: devnet::Executor::ExecutorCalls::SELECTORS,
            events: &[],
        },
        Declared {
            name: "devnet DVN",
            artifact: Contract::Dvn,
            functions: devnet::DVN::DVNCalls::SELECTORS,
            events: &[],
        },
        Declared {
            name: "devnet OmniCounter",
            artifact: Contract::OmniCounter,
            functions: devnet::OmniCounter::OmniCounterCalls::SELECTORS,
            events: &[],
        },
    ]
}

#[test]
fn every_declared_selector_and_topic_exists_in_the_real_artifacts() {
    let artifacts = Artifacts::locate().expect("run scripts/setup.sh first");
    let mut checked = 0;
    for d in declared() {
        let abi = artifacts.load(d.artifact).unwrap().abi;
        let functions: HashSet<FixedBytes<4>> = abi.functions().map(|f| f.selector()).collect();
        let topics: HashSet<B256> = abi.events().map(|e| e.selector()).collect();
        assert!(
            !d.functions.is_empty() || !d.events.is_empty(),
            "{} declares nothing",
            d.name
        );
        for selector in d.functions {
            let selector = FixedBytes::from(*selector);
            assert!(
                functions.contains(&selector),
                "{}: function selector {selector} is not in the artifact",
                d.name
            );
            checked += 1;
        }
        for topic in d.events {
            let topic = B256::from(*topic);
            assert!(
                topics.contains(&topic),
                "{}: event topic {topic} is not in the artifact",
                d.name
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "only {checked} items checked");
}

#[test]
fn a_wrong_declaration_would_be_caught() {
    // The check above is only meaningful if a mismatch is visible: a function with a wrong
    // parameter type has a different selector that the artifact does not contain.
    alloy::sol! { interface Wrong { function verify(bytes header, bytes32 payloadHash, uint256 confirmations) external; } }
    let artifacts = Artifacts::locate().unwrap();
    let abi = artifacts.load(Contract::ReceiveUln302).unwrap().abi;
    let selectors: HashSet<FixedBytes<4>> = abi.functions().map(|f| f.selector()).collect();
    for selector in Wrong::WrongCalls::SELECTORS {
        assert!(!selectors.contains(&FixedBytes::from(*selector)));
    }
}
