//! `jsm-orgs sandbox`: serve the local site until Ctrl-C.

use crate::error::{Error, Exit};
use crate::sandbox::SandboxConfig;

pub async fn run(cfg: SandboxConfig) -> Result<Exit, Error> {
    crate::sandbox::serve_until_ctrl_c(cfg).await.map_err(Error::Setup)?;
    Ok(Exit::Ok)
}
