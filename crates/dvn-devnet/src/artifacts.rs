//! The pinned npm packages the devnet runs: anvil and the real LayerZero V2 artifacts.
//!
//! They are installed at test time by `scripts/setup.sh` into `devnet/node_modules` (git-ignored)
//! from the committed `devnet/package-lock.json`; nothing of theirs is vendored. This module
//! finds that folder and reads creation bytecode and ABIs out of the hardhat artifacts.

use std::path::{Path, PathBuf};

use alloy::json_abi::JsonAbi;
use alloy::primitives::Bytes;
use serde::Deserialize;

/// Env var naming the `node_modules` folder, overriding the search.
pub const NODE_MODULES_ENV: &str = "DVN_DEVNET_NODE_MODULES";

/// A contract the devnet deploys or whose ABI the tests check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Contract {
    EndpointV2,
    SendUln302,
    ReceiveUln302,
    ReceiveUln302View,
    Treasury,
    PriceFeed,
    Executor,
    ExecutorFeeLib,
    Dvn,
    DvnFeeLib,
    OmniCounter,
    /// A second send library (no DVNs, no fee events), to register beside SendUln302.
    SimpleMessageLib,
    /// The compact-calldata front of `DVN.execute`.
    DvnDecompressor,
}

impl Contract {
    /// Path of the hardhat artifact below `node_modules`.
    pub fn artifact_path(self) -> String {
        const PROTOCOL: &str = "@layerzerolabs/lz-evm-protocol-v2/artifacts/contracts";
        const MSGLIB: &str = "@layerzerolabs/lz-evm-messagelib-v2/artifacts/contracts";
        const OAPP: &str = "@layerzerolabs/lz-evm-oapp-v2/artifacts/contracts";
        let (package, file) = match self {
            Self::EndpointV2 => (PROTOCOL, "EndpointV2.sol/EndpointV2.json"),
            Self::SendUln302 => (MSGLIB, "uln/uln302/SendUln302.sol/SendUln302.json"),
            Self::ReceiveUln302 => (MSGLIB, "uln/uln302/ReceiveUln302.sol/ReceiveUln302.json"),
            Self::ReceiveUln302View => (
                MSGLIB,
                "uln/uln302/ReceiveUln302View.sol/ReceiveUln302View.json",
            ),
            Self::Treasury => (MSGLIB, "Treasury.sol/Treasury.json"),
            Self::PriceFeed => (MSGLIB, "PriceFeed.sol/PriceFeed.json"),
            Self::Executor => (MSGLIB, "Executor.sol/Executor.json"),
            Self::ExecutorFeeLib => (MSGLIB, "ExecutorFeeLib.sol/ExecutorFeeLib.json"),
            Self::Dvn => (MSGLIB, "uln/dvn/DVN.sol/DVN.json"),
            Self::DvnFeeLib => (MSGLIB, "uln/dvn/DVNFeeLib.sol/DVNFeeLib.json"),
            Self::OmniCounter => (OAPP, "oapp/examples/OmniCounter.sol/OmniCounter.json"),
            Self::SimpleMessageLib => (
                PROTOCOL,
                "messagelib/SimpleMessageLib.sol/SimpleMessageLib.json",
            ),
            Self::DvnDecompressor => (
                MSGLIB,
                "decompressor/DVNDecompressor.sol/DVNDecompressor.json",
            ),
        };
        format!("{package}/{file}")
    }
}

/// Why the pinned packages could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(
        "devnet packages not found (looked in {searched}); run scripts/setup.sh or set {NODE_MODULES_ENV}"
    )]
    NotInstalled { searched: String },
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parsing {path}: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// A compiled contract: its ABI and creation bytecode.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub abi: JsonAbi,
    pub bytecode: Bytes,
}

#[derive(Deserialize)]
struct HardhatArtifact {
    abi: JsonAbi,
    bytecode: Bytes,
}

/// The installed `node_modules` folder.
#[derive(Debug, Clone)]
pub struct Artifacts {
    node_modules: PathBuf,
}

impl Artifacts {
    /// Finds the packages: `$DVN_DEVNET_NODE_MODULES`, else `devnet/node_modules` in the
    /// current directory or any parent, else the one in this source tree.
    pub fn locate() -> Result<Self, ArtifactError> {
        let mut candidates = Vec::new();
        if let Some(dir) = std::env::var_os(NODE_MODULES_ENV) {
            candidates.push(PathBuf::from(dir));
        }
        if let Ok(cwd) = std::env::current_dir() {
            candidates.extend(cwd.ancestors().map(|d| d.join("devnet/node_modules")));
        }
        candidates.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../devnet/node_modules"));
        for dir in &candidates {
            let artifacts = Self {
                node_modules: dir.clone(),
            };
            if artifacts.anvil_binary().is_file() {
                return Ok(artifacts);
            }
        }
        let searched = candidates
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>();
        Err(ArtifactError::NotInstalled {
            searched: searched.join(", "),
        })
    }

    /// The pinned anvil binary (`@foundry-rs/anvil-linux-amd64`).
    /// The repository's `devnet/` directory (holds `node_modules`).
    pub fn devnet_dir(&self) -> PathBuf {
        self.node_modules
            .parent()
            .map_or_else(|| self.node_modules.clone(), Path::to_path_buf)
    }

    pub fn anvil_binary(&self) -> PathBuf {
        self.node_modules
            .join("@foundry-rs/anvil-linux-amd64/bin/anvil")
    }

    /// Loads one contract's artifact.
    pub fn load(&self, contract: Contract) -> Result<Artifact, ArtifactError> {
        let path = self.node_modules.join(contract.artifact_path());
        let text = std::fs::read_to_string(&path).map_err(|source| ArtifactError::Read {
            path: path.clone(),
            source,
        })?;
        let parsed: HardhatArtifact =
            serde_json::from_str(&text).map_err(|source| ArtifactError::Parse { path, source })?;
        Ok(Artifact {
            abi: parsed.abi,
            bytecode: parsed.bytecode,
        })
    }
}
