//! `jsm-orgs demo`: the newcomer's first run (see [`crate::demo`]).

use std::path::PathBuf;

use crate::error::{Error, Exit};

pub async fn run(dir: Option<PathBuf>, progress: bool) -> Result<Exit, Error> {
    crate::demo::run(dir, progress).await.map_err(Error::Setup)
}
