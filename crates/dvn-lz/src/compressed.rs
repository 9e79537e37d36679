//! The compact `DVN.execute` of LayerZero's `DVNDecompressor` (messagelib
//! `contracts/decompressor/`): instead of the ABI-encoded `ExecuteParam[]`, its
//! `execute(bytes)` takes the params packed without padding, and fills in the `vid` and the
//! target from its own storage (`vid` is immutable; targets and DVNs are small indexes set by
//! its owner). It then calls `DVN.execute` itself — so *the decompressor* needs `ADMIN_ROLE`
//! on the DVN, and only its owner may call it.
//!
//! Layout (`DVNDecoder.execute`), all big-endian:
//! `dvnIndex u16 · count u8 · count × (targetIndex u8 · expiration u128 · sigLen u16 ·
//! signatures · callDataLen u64 · callData)`.

use alloy_primitives::{Bytes, U256};
use alloy_sol_types::sol;

use crate::contracts::ExecuteParam;

sol! {
    /// `DVNDecompressor`: the parts the node calls and checks.
    interface IDVNDecompressor {
        function execute(bytes calldata _encoded) external;
        function owner() external view returns (address);
        function vid() external view returns (uint32);
        function dvns(uint16 index) external view returns (address);
        function targets(uint8 index) external view returns (address);
    }
}

/// Why params cannot be packed (the compact form has narrow length fields).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompressError {
    #[error("at most 255 params fit one compressed execute, got {0}")]
    TooManyParams(usize),
    #[error("param {0}: expiration does not fit 128 bits")]
    Expiration(usize),
    #[error("param {0}: signatures longer than 65535 bytes")]
    Signatures(usize),
    #[error("compressed execute truncated at byte {0}")]
    Truncated(usize),
    #[error("{0} bytes left over after the last param")]
    Trailing(usize),
}

/// One param as the compact form carries it: everything but `vid` and the target address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactParam {
    pub target_index: u8,
    pub expiration: u128,
    pub signatures: Bytes,
    pub call_data: Bytes,
}

impl CompactParam {
    /// The param with the `vid` and target the decompressor fills in.
    pub fn into_param(self, vid: u32, target: alloy_primitives::Address) -> ExecuteParam {
        ExecuteParam {
            vid,
            target,
            callData: self.call_data,
            expiration: U256::from(self.expiration),
            signatures: self.signatures,
        }
    }
}

/// Packs `params` for the DVN at `dvn_index`, each aimed at the target at `target_index`
/// (the `vid` and target addresses in `params` are the caller's to have checked against the
/// decompressor's).
pub fn encode(
    dvn_index: u16,
    target_index: u8,
    params: &[ExecuteParam],
) -> Result<Bytes, CompressError> {
    let count =
        u8::try_from(params.len()).map_err(|_| CompressError::TooManyParams(params.len()))?;
    let mut out = Vec::with_capacity(
        3 + params
            .iter()
            .map(|p| 27 + p.signatures.len() + p.callData.len())
            .sum::<usize>(),
    );
    out.extend_from_slice(&dvn_index.to_be_bytes());
    out.push(count);
    for (i, p) in params.iter().enumerate() {
        let expiration = u128::try_from(p.expiration).map_err(|_| CompressError::Expiration(i))?;
        let sig_len =
            u16::try_from(p.signatures.len()).map_err(|_| CompressError::Signatures(i))?;
        out.push(target_index);
        out.extend_from_slice(&expiration.to_be_bytes());
        out.extend_from_slice(&sig_len.to_be_bytes());
        out.extend_from_slice(&p.signatures);
        out.extend_from_slice(&(p.callData.len() as u64).to_be_bytes());
        out.extend_from_slice(&p.callData);
    }
    Ok(out.into())
}

/// Reads a compact execute back: the DVN index and the params. Strict: the bytes must end
/// exactly after the last param (the contract ignores a tail; we never write one).
pub fn decode(encoded: &[u8]) -> Result<(u16, Vec<CompactParam>), CompressError> {
    let mut cursor = Cursor {
        bytes: encoded,
        at: 0,
    };
    let dvn_index = u16::from_be_bytes(cursor.take_array()?);
    let [count] = cursor.take_array::<1>()?;
    let mut params = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let [target_index] = cursor.take_array::<1>()?;
        let expiration = u128::from_be_bytes(cursor.take_array()?);
        let sig_len = u16::from_be_bytes(cursor.take_array()?);
        let signatures = Bytes::copy_from_slice(cursor.take(usize::from(sig_len))?);
        let data_len = u64::from_be_bytes(cursor.take_array()?);
        let data_len =
            usize::try_from(data_len).map_err(|_| CompressError::Truncated(cursor.at))?;
        let call_data = Bytes::copy_from_slice(cursor.take(data_len)?);
        params.push(CompactParam {
            target_index,
            expiration,
            signatures,
            call_data,
        });
    }
    match encoded.len() - cursor.at {
        0 => Ok((dvn_index, params)),
        left => Err(CompressError::Trailing(left)),
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CompressError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.bytes.len());
        let end = end.ok_or(CompressError::Truncated(self.at))?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N], CompressError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::Address;

    fn param(n: u8) -> ExecuteParam {
        ExecuteParam {
            vid: 7,
            target: Address::repeat_byte(9),
            callData: Bytes::from(vec![n; 100 + usize::from(n)]),
            expiration: U256::from(1_700_000_000u64 + u64::from(n)),
            signatures: Bytes::from(vec![n ^ 0xff; 130]),
        }
    }

    #[test]
    fn packs_and_reads_back_every_field_but_vid_and_target() {
        let params: Vec<_> = (1..=3).map(param).collect();
        let encoded = encode(2, 1, &params).unwrap();
        // 3 header bytes, then per param 1 + 16 + 2 + 130 + 8 + calldata.
        let expected_len: usize = 3 + params.iter().map(|p| 157 + p.callData.len()).sum::<usize>();
        assert_eq!(encoded.len(), expected_len);
        assert_eq!(&encoded[..3], &[0, 2, 3]);
        let (dvn, back) = decode(&encoded).unwrap();
        assert_eq!(dvn, 2);
        let back: Vec<_> = back
            .into_iter()
            .map(|c| {
                assert_eq!(c.target_index, 1);
                c.into_param(7, Address::repeat_byte(9))
            })
            .collect();
        assert_eq!(back, params);
    }

    #[test]
    fn refuses_what_the_compact_form_cannot_carry() {
        let many = vec![param(1); 256];
        assert_eq!(encode(0, 0, &many), Err(CompressError::TooManyParams(256)));
        let mut far = param(1);
        far.expiration = U256::from(u128::MAX) + U256::from(1);
        assert_eq!(encode(0, 0, &[far]), Err(CompressError::Expiration(0)));
        let mut long = param(1);
        long.signatures = Bytes::from(vec![1; 70_000]);
        assert_eq!(encode(0, 0, &[long]), Err(CompressError::Signatures(0)));
    }

    #[test]
    fn a_truncated_or_padded_encoding_is_an_error_not_a_panic() {
        let encoded = encode(0, 0, &[param(1), param(2)]).unwrap();
        for cut in [0, 1, 2, 3, 20, encoded.len() - 1] {
            assert!(
                matches!(decode(&encoded[..cut]), Err(CompressError::Truncated(_))),
                "cut at {cut}"
            );
        }
        let mut padded = encoded.to_vec();
        padded.push(0);
        assert_eq!(decode(&padded), Err(CompressError::Trailing(1)));
        // A length field pointing far past the end.
        let mut huge = vec![0, 0, 1, 0];
        huge.extend_from_slice(&[0; 16]);
        huge.extend_from_slice(&u16::MAX.to_be_bytes());
        assert!(matches!(decode(&huge), Err(CompressError::Truncated(_))));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_to_a_value_or_an_error(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
            if let Ok((dvn, params)) = decode(&bytes) {
                let params: Vec<_> = params.into_iter().map(|c| (c.target_index, c.into_param(0, Address::ZERO))).collect();
                // What decodes re-encodes to the same bytes (one target index per call here).
                if params.iter().all(|(t, _)| *t == params[0].0) && !params.is_empty() {
                    let plain: Vec<_> = params.iter().map(|(_, p)| p.clone()).collect();
                    proptest::prop_assert_eq!(encode(dvn, params[0].0, &plain).unwrap().to_vec(), bytes);
                }
            }
        }
    }
}
