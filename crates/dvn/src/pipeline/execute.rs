//! How our `DVN.execute` is reached on one chain: directly from the submitter, or through a
//! `DVNDecompressor` the submitter owns (`chains[].decompressor`: compact calldata, see
//! [`dvn_lz::compressed`]). One place builds the call, names the account the DVN sees as its
//! caller (the one that needs `ADMIN_ROLE`), reads a mined call's params back in either form,
//! and checks a configured decompressor against the chain.

use alloy::primitives::{Address, Bytes};
use alloy::sol_types::SolCall;
use dvn_lz::compressed::{self, IDVNDecompressor};
use dvn_lz::contracts::{ExecuteParam, ADMIN_ROLE, IDVN};

use crate::chain::EvmChain;
use crate::config::ChainConfig;

/// The most input an `execute` is sent with. Geth's pool (and Erigon's, and Nethermind's)
/// refuses a transaction over 128 KiB ("oversized data"), reth's one whose input is over that;
/// the rest of an EIP-1559 transaction (fees, recipient, signature, an empty access list) is
/// under 200 bytes, so a kibibyte is left for it. A refused transaction is stored before it is
/// broadcast and would be sent again, and replaced, forever: batches are halved to fit (about
/// 190 plain params; `max_batch` allows 255, and `max_batch_gas` can be raised past it).
pub const MAX_INPUT_BYTES: usize = 127 * 1024;

/// The transaction for `params`: `(to, input)`.
pub fn call(
    chain: &ChainConfig,
    dvn: Address,
    params: Vec<ExecuteParam>,
) -> anyhow::Result<(Address, Bytes)> {
    match &chain.decompressor {
        None => Ok((dvn, IDVN::executeCall { params }.abi_encode().into())),
        Some(d) => {
            let encoded = compressed::encode(d.dvn_index, d.target_index, &params)?;
            let input = IDVNDecompressor::executeCall { _encoded: encoded }.abi_encode();
            Ok((d.address, input.into()))
        }
    }
}

/// The account `DVN.execute` sees as its caller for packets on this chain: it must hold
/// `ADMIN_ROLE` on the DVN.
pub fn caller(chain: &ChainConfig, submitter: Address) -> Address {
    chain.decompressor.as_ref().map_or(submitter, |d| d.address)
}

/// The params' call data of a mined `execute`, in order, from the transaction's input in
/// either form; `None` when it is neither.
pub fn mined_call_data(input: &[u8]) -> Option<Vec<Bytes>> {
    if let Ok(call) = IDVN::executeCall::abi_decode(input) {
        return Some(call.params.into_iter().map(|p| p.callData).collect());
    }
    let call = IDVNDecompressor::executeCall::abi_decode(input).ok()?;
    let (_, params) = compressed::decode(&call._encoded).ok()?;
    Some(params.into_iter().map(|p| p.call_data).collect())
}

/// Whether our executing account may call `DVN.execute` now: it holds `ADMIN_ROLE`, and a
/// decompressor is still owned by our submitter (its owner is the only account that may call
/// it; ownership can be transferred).
pub async fn may_execute(
    chain: &EvmChain,
    dvn: Address,
    submitter: Address,
) -> anyhow::Result<bool> {
    let account = caller(&chain.config, submitter);
    let admin = chain
        .call(
            dvn,
            &IDVN::hasRoleCall {
                role: ADMIN_ROLE,
                account,
            },
            None,
        )
        .await?;
    if !admin {
        return Ok(false);
    }
    match &chain.config.decompressor {
        None => Ok(true),
        Some(d) => Ok(chain
            .call(d.address, &IDVNDecompressor::ownerCall {}, None)
            .await?
            == submitter),
    }
}

/// The start-up check of a configured decompressor: what it would do differs from what the
/// node expects. Returns the first mismatch, said as expected vs actual.
pub async fn check_decompressor(
    chain: &EvmChain,
    dvn: Address,
    vid: u32,
    submitter: Address,
) -> anyhow::Result<Option<String>> {
    let Some(d) = &chain.config.decompressor else {
        return Ok(None);
    };
    let owner = chain
        .call(d.address, &IDVNDecompressor::ownerCall {}, None)
        .await?;
    if owner != submitter {
        return Ok(Some(format!(
            "is owned by {owner}, not by our submitter {submitter} (only its owner may call it)"
        )));
    }
    let its_vid = chain
        .call(d.address, &IDVNDecompressor::vidCall {}, None)
        .await?;
    if its_vid != vid {
        return Ok(Some(format!(
            "fills in vid {its_vid}, but the DVN's vid is {vid}"
        )));
    }
    let its_dvn = chain
        .call(
            d.address,
            &IDVNDecompressor::dvnsCall { index: d.dvn_index },
            None,
        )
        .await?;
    if its_dvn != dvn {
        return Ok(Some(format!(
            "has {its_dvn} at dvn_index {}, not our DVN {dvn}",
            d.dvn_index
        )));
    }
    let target = chain
        .call(
            d.address,
            &IDVNDecompressor::targetsCall {
                index: d.target_index,
            },
            None,
        )
        .await?;
    if target != chain.config.receive_uln {
        return Ok(Some(format!(
            "has {target} at target_index {}, not receive_uln {}",
            d.target_index, chain.config.receive_uln
        )));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::{B256, U256};
    use dvn_lz::contracts::IReceiveUln302;

    fn chain(decompressor: Option<crate::config::DecompressorConfig>) -> ChainConfig {
        let mut c: ChainConfig = serde_json::from_value(serde_json::json!({
            "name": "b", "eid": 2, "chain_id": 2, "rpc": ["http://127.0.0.1:1"],
            "endpoint": Address::repeat_byte(1), "send_uln": Address::repeat_byte(2),
            "receive_uln": Address::repeat_byte(3), "dvn": Address::repeat_byte(4),
        }))
        .unwrap();
        c.decompressor = decompressor;
        c
    }

    fn params() -> Vec<ExecuteParam> {
        (1u8..=3)
            .map(|n| ExecuteParam {
                vid: 2,
                target: Address::repeat_byte(3),
                callData: IReceiveUln302::verifyCall {
                    packetHeader: vec![n; 81].into(),
                    payloadHash: B256::repeat_byte(n),
                    confirmations: 1,
                }
                .abi_encode()
                .into(),
                expiration: U256::from(1_000u64),
                signatures: vec![n; 130].into(),
            })
            .collect()
    }

    #[test]
    fn both_forms_read_back_to_the_same_call_data_and_compact_is_smaller() {
        let dvn = Address::repeat_byte(4);
        let (to, direct) = call(&chain(None), dvn, params()).unwrap();
        assert_eq!(to, dvn);
        let d = crate::config::DecompressorConfig {
            address: Address::repeat_byte(5),
            dvn_index: 0,
            target_index: 0,
        };
        let (to, compact) = call(&chain(Some(d)), dvn, params()).unwrap();
        assert_eq!(to, Address::repeat_byte(5));
        let expected: Vec<Bytes> = params().into_iter().map(|p| p.callData).collect();
        assert_eq!(mined_call_data(&direct), Some(expected.clone()));
        assert_eq!(mined_call_data(&compact), Some(expected));
        assert!(
            compact.len() * 10 < direct.len() * 8,
            "compact {} vs direct {} bytes",
            compact.len(),
            direct.len()
        );
        assert_eq!(mined_call_data(&[1, 2, 3, 4, 5]), None);
        assert_eq!(
            caller(&chain(None), Address::repeat_byte(9)),
            Address::repeat_byte(9)
        );
    }
}
