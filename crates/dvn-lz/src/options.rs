//! Type-3 message options, as `OptionsBuilder` encodes them for an OApp's `send`.
//!
//! The DVN never needs options to verify, but every send must carry a valid executor option
//! (empty options or a bare `0x0003` revert), so the devnet and benchmarks build them here.

use alloy_primitives::Bytes;

const OPTIONS_TYPE_3: u16 = 3;
const EXECUTOR_WORKER_ID: u8 = 1;
const OPTION_TYPE_LZRECEIVE: u8 = 1;

/// `0x0003 ‖ workerId 1 ‖ size ‖ optionType 1 ‖ gas(16) [‖ value(16)]`.
pub fn executor_lz_receive_option(gas: u128, value: u128) -> Bytes {
    let mut option = gas.to_be_bytes().to_vec();
    if value > 0 {
        option.extend_from_slice(&value.to_be_bytes());
    }
    let mut out = OPTIONS_TYPE_3.to_be_bytes().to_vec();
    out.push(EXECUTOR_WORKER_ID);
    // The size covers the option type byte plus the option body (17 or 33: always fits u16).
    let size = u16::try_from(option.len() + 1).unwrap_or(u16::MAX);
    out.extend_from_slice(&size.to_be_bytes());
    out.push(OPTION_TYPE_LZRECEIVE);
    out.extend_from_slice(&option);
    out.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy_primitives::hex;

    #[test]
    fn matches_the_probe_encoding_for_200k_gas() {
        assert_eq!(
            hex::encode(executor_lz_receive_option(200_000, 0)),
            "00030100110100000000000000000000000000030d40"
        );
    }

    #[test]
    fn a_value_makes_the_option_33_bytes() {
        let with_value = executor_lz_receive_option(1, 2);
        assert_eq!(with_value.len(), 2 + 1 + 2 + 1 + 32);
        assert_eq!(&with_value[3..5], &[0, 33]);
    }
}
