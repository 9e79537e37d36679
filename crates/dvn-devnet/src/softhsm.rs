//! A SoftHSM2 token store in a temporary directory with one initialised token: the PKCS#11
//! HSM the tests and the signing benchmark use (Debian `softhsm2`, installed by
//! `scripts/setup.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The PKCS#11 module Debian's `softhsm2` installs.
pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// The label of the token [`SoftHsm::new`] initialises.
pub const TOKEN: &str = "dvn-test";
/// Its user PIN.
pub const PIN: &str = "4321-user-pin";

/// A token store of its own; removed on drop.
#[derive(Debug)]
pub struct SoftHsm {
    dir: tempfile::TempDir,
    /// The `SOFTHSM2_CONF` file pointing at this store.
    pub conf: PathBuf,
}

impl SoftHsm {
    /// Initialises the token and points this process's `SOFTHSM2_CONF` at it (the PKCS#11
    /// library reads it when the process first initialises the module: one store per process).
    pub fn create() -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let tokens = dir.path().join("tokens");
        std::fs::create_dir_all(&tokens)?;
        let conf = dir.path().join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                tokens.display()
            ),
        )?;
        let out = Command::new("softhsm2-util")
            .args(["--init-token", "--free", "--label", TOKEN])
            .args(["--so-pin", "87654321", "--pin", PIN])
            .env("SOFTHSM2_CONF", &conf)
            .output()
            .map_err(|e| anyhow::anyhow!("softhsm2-util (run scripts/setup.sh): {e}"))?;
        anyhow::ensure!(
            out.status.success(),
            "softhsm2-util --init-token: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::env::set_var("SOFTHSM2_CONF", &conf);
        Ok(Self { dir, conf })
    }

    /// The module's path.
    pub fn module() -> &'static Path {
        Path::new(MODULE)
    }

    fn tokens(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// Makes the token store unreachable, as an HSM that went away.
    pub fn disconnect(&self) -> std::io::Result<()> {
        std::fs::rename(self.tokens(), self.dir.path().join("tokens.offline"))
    }

    /// Brings it back.
    pub fn reconnect(&self) -> std::io::Result<()> {
        std::fs::rename(self.dir.path().join("tokens.offline"), self.tokens())
    }
}
