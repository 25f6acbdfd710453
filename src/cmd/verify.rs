//! `jsm-orgs verify DIR`: run [`crate::snapshot::verify`], print one line per
//! file on stderr (and the JSON object on stdout with `--json`).

use std::path::Path;

use crate::error::{Error, Exit};

pub fn run(dir: &Path, json: bool) -> Result<Exit, Error> {
    match crate::snapshot::verify(dir) {
        Ok(report) => {
            eprint!("{}", report.human());
            let exit = if report.is_intact() { Exit::Ok } else { Exit::Failed };
            if json {
                let mut value = serde_json::to_value(&report).expect("the report serializes");
                value["command"] = "verify".into();
                value["intact"] = report.is_intact().into();
                value["exit_code"] = exit.code().into();
                println!("{value}");
            }
            Ok(exit)
        }
        Err(e) => {
            let err = Error::from(e);
            if json {
                super::print_failure_json("verify", &err, serde_json::json!({"snapshot": dir, "intact": false}));
            }
            Err(err)
        }
    }
}
