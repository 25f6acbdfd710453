//! `jsm-orgs diff OLD NEW`: run [`crate::snapshot::diff`], the change rows on
//! stdout (or `--report FILE`), the counts per kind on stderr, the JSON
//! object on stdout with `--json` (then rows go only to `--report`).

use std::io::{self, Write};

use crate::error::{Error, Exit};
use crate::snapshot::DiffOptions;

pub fn run(opts: &DiffOptions, json: bool) -> Result<Exit, Error> {
    let stdout = io::stdout();
    let mut rows: Box<dyn Write> = if json { Box::new(io::sink()) } else { Box::new(stdout.lock()) };
    let result = crate::snapshot::diff(opts, &mut rows);
    drop(rows);
    match result {
        Ok(summary) => {
            eprint!("{summary}");
            let exit = if summary.identical() { Exit::Ok } else { Exit::Failed };
            if json {
                println!("{}", summary.to_json(exit.code()));
            }
            Ok(exit)
        }
        Err(e) => {
            let err = Error::from(e);
            if json {
                super::print_failure_json("diff", &err, serde_json::json!({"old": opts.old, "new": opts.new}));
            }
            Err(err)
        }
    }
}
