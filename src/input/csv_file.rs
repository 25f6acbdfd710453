//! CSV input files: the header check done when the input is opened, and the
//! streaming of records into validated rows.
//!
//! It owns what is CSV-specific: header names (trimmed, lowercased, BOM
//! dropped), quoting and physical line numbers (the `csv` crate), a cell
//! count that differs from the header's, invalid UTF-8 (records are read as
//! bytes so one bad cell fails one row, naming its column), and undoing a
//! snapshot's formula escape. It must not judge values: cells go to
//! `validate` as text, so CSV and JSONL rows obey the same rules.

use std::borrow::Cow;
use std::io;
use std::path::Path;
use std::sync::Arc;

use csv::ByteRecord;

use super::fields::{self, Field, FieldSet};
use super::text::{open_text_hashed, sniff_delimiter, Digest, TextReader};
use super::validate::{validate, Problem, Raw, RawRow};
use super::{InputError, RowResult, Source};
use crate::model::{unescape_formula, unescape_formula_marker};

/// What the header of a CSV file says, checked once when the input opens.
#[derive(Debug)]
pub(super) struct CsvSchema {
    /// Known columns in header order, with their position.
    columns: Vec<(Field, usize)>,
    /// Number of columns in the header.
    width: usize,
    /// Cells were written with [`crate::model::escape_formula`].
    unescape: bool,
    /// `,`, `;` or TAB, as the header line uses.
    delimiter: u8,
}

/// Read and check the header of `path`; also tell whether any row follows.
/// Returns the schema and the warnings (unknown columns, no rows).
pub(super) fn inspect(path: &Path, display: &str, unescape: bool) -> Result<(CsvSchema, Vec<String>), InputError> {
    let delimiter = sniff_delimiter(path).map_err(|e| InputError::io(path, e))?;
    let mut reader = reader(path, delimiter, None).map_err(|e| InputError::io(path, e))?;
    let header = reader.byte_headers().map_err(|e| InputError::io(path, csv_io(e)))?.clone();
    let mut warnings = Vec::new();
    let mut schema = CsvSchema { columns: Vec::new(), width: header.len(), unescape, delimiter };
    if header.is_empty() {
        warnings.push(format!("{display}: file has no rows"));
        return Ok((schema, warnings));
    }

    let mut present = FieldSet::default();
    let mut names = Vec::with_capacity(header.len());
    let mut unknown = Vec::new();
    for (position, bytes) in header.iter().enumerate() {
        let name = std::str::from_utf8(bytes).map_err(|_| InputError::BadHeader {
            path: path.to_path_buf(),
            message: format!("column {} is not valid UTF-8", position + 1),
        })?;
        let name = name.trim_start_matches('\u{feff}').trim().to_string();
        match Field::from_name(&name) {
            Some(field) if present.contains(field) => {
                return Err(InputError::DuplicateColumn { path: path.to_path_buf(), column: name })
            }
            Some(field) => {
                present.insert(field);
                schema.columns.push((field, position));
            }
            None if name.is_empty() => {}
            None => unknown.push(name.clone()),
        }
        if !name.is_empty() {
            names.push(name);
        }
    }
    // A near miss of a column that decides or is required for a kind is an
    // error: reading on would misfile every row or fail them all.
    for name in &unknown {
        if let Some(field) = Field::suggest(name).filter(|&f| fields::is_required_anywhere(f) && !present.contains(f)) {
            return Err(InputError::NearMiss {
                path: path.to_path_buf(),
                column: name.clone(),
                suggestion: field.name(),
            });
        }
    }
    let mut unknown: Vec<String> = unknown
        .iter()
        .map(|name| match Field::suggest(name) {
            Some(f) => format!("`{name}` (did you mean `{}`?)", f.name()),
            None => format!("`{name}`"),
        })
        .collect();

    let kinds = present.kinds();
    if kinds.is_empty() {
        return Err(InputError::UnknownKind { path: path.to_path_buf(), columns: names });
    }
    for kind in kinds {
        if let Some(column) = present.missing_for(kind) {
            return Err(InputError::MissingColumn { path: path.to_path_buf(), kind, column: column.name() });
        }
    }
    unknown.extend(present.unused().iter().map(|f| format!("`{}`", f.name())));
    if !unknown.is_empty() {
        warnings.push(format!("{display}: ignoring unknown columns {}", unknown.join(", ")));
    }

    let mut record = ByteRecord::new();
    loop {
        if !reader.read_byte_record(&mut record).map_err(|e| InputError::io(path, csv_io(e)))? {
            warnings.push(format!("{display}: file has no rows"));
            break;
        }
        if !is_blank(&record) {
            break;
        }
    }
    Ok((schema, warnings))
}

/// A CSV file being streamed.
pub(super) struct CsvRows {
    reader: csv::Reader<LineTee>,
    record: ByteRecord,
}

impl CsvRows {
    #[cfg(test)]
    pub(super) fn open(path: &Path, schema: &CsvSchema) -> io::Result<Self> {
        CsvRows::open_hashed(path, schema, None)
    }

    /// Open a CSV file, feeding its raw bytes to `digest` (the fingerprint).
    pub(super) fn open_hashed(path: &Path, schema: &CsvSchema, digest: Option<Digest>) -> io::Result<Self> {
        Ok(CsvRows { reader: reader(path, schema.delimiter, digest)?, record: ByteRecord::new() })
    }

    /// The next non-blank record as a validated row, `None` at the end.
    pub(super) fn next_row(
        &mut self,
        schema: &CsvSchema,
        file: &Arc<str>,
        index: u64,
    ) -> Option<io::Result<RowResult>> {
        loop {
            match self.reader.read_byte_record(&mut self.record) {
                Err(e) => return Some(Err(csv_io(e))),
                Ok(false) => return None,
                Ok(true) if is_blank(&self.record) => continue,
                Ok(true) => {
                    let start = self.record.position().map_or(0, |p| p.byte());
                    let line = self.reader.get_mut().record_line(start);
                    let source = Source { file: Arc::clone(file), line };
                    return Some(Ok(schema.row(&self.record, source, index)));
                }
            }
        }
    }
}

impl CsvSchema {
    fn row(&self, record: &ByteRecord, source: Source, index: u64) -> RowResult {
        let mut problem = None;
        let extra_cells = record.iter().skip(self.width).any(|c| !c.is_empty());
        if record.len() < self.width || extra_cells {
            problem = Some(Problem::row(format!(
                "the row has {} cells but the header has {} columns",
                record.len(),
                self.width
            )));
        }
        let mut cells: [Option<Cow<'_, str>>; Field::COUNT] = Default::default();
        for &(field, position) in &self.columns {
            let Some(bytes) = record.get(position) else {
                continue;
            };
            cells[field.index()] = Some(match std::str::from_utf8(bytes) {
                Ok(text) => Cow::Borrowed(text),
                Err(_) => {
                    problem.get_or_insert_with(|| Problem::field(field, "not valid UTF-8 (save the file as UTF-8)"));
                    String::from_utf8_lossy(bytes)
                }
            });
        }
        let mut raw = RawRow::new(true);
        raw.problem = problem;
        for field in Field::ALL {
            if let Some(text) = &cells[field.index()] {
                // Without a manifest, only the export's own marker is undone.
                let text = if self.unescape { unescape_formula(text) } else { unescape_formula_marker(text) };
                raw.set(field, Raw::Text(text));
            }
        }
        validate(&raw, index, source)
    }
}

fn reader(path: &Path, delimiter: u8, digest: Option<Digest>) -> io::Result<csv::Reader<LineTee>> {
    Ok(csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(true)
        .delimiter(delimiter)
        .from_reader(LineTee::new(open_text_hashed(path, digest)?)))
}

/// Bytes already counted are forgotten once this many have piled up.
const FORGET_AFTER: usize = 64 * 1024;

/// Passes the file to the CSV parser and keeps the bytes of the current
/// record, to give each record the physical line it starts on. (The `csv`
/// crate's own line numbers are one short after a CRLF or a skipped blank
/// line: a record's position is taken before the line break that ends the
/// previous line is consumed.)
struct LineTee {
    inner: TextReader,
    /// Bytes read from offset `kept_from` on.
    kept: Vec<u8>,
    kept_from: u64,
    /// Offset up to which `\n`s are counted, and the line it is on.
    counted_to: u64,
    line: u64,
}

impl LineTee {
    fn new(inner: TextReader) -> Self {
        LineTee { inner, kept: Vec::new(), kept_from: 0, counted_to: 0, line: 1 }
    }

    /// The line of a record that the parser began reading at byte `start`:
    /// past the line breaks (the rest of a CRLF, blank lines) that it skips
    /// before the record's first byte.
    fn record_line(&mut self, start: u64) -> u64 {
        let offset = |at: u64| usize::try_from(at - self.kept_from).expect("kept bytes fit in memory");
        let (from, to) = (offset(self.counted_to), offset(start));
        self.line += count_newlines(&self.kept[from..to]);
        self.counted_to = start;
        let mut line = self.line;
        for &b in &self.kept[to..] {
            match b {
                b'\n' => line += 1,
                b'\r' => {}
                _ => break,
            }
        }
        if to >= FORGET_AFTER {
            self.kept.drain(..to);
            self.kept_from = start;
        }
        line
    }
}

impl io::Read for LineTee {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.kept.extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

fn count_newlines(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|&&b| b == b'\n').count() as u64
}

/// A record whose cells are all empty (an empty line, or `,,` that a
/// spreadsheet leaves below the data) is no row at all.
fn is_blank(record: &ByteRecord) -> bool {
    record.iter().all(<[u8]>::is_empty)
}

fn csv_io(e: csv::Error) -> io::Error {
    let message = e.to_string();
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        _ => io::Error::new(io::ErrorKind::InvalidData, message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Action, Kind, OrgRef, RowData};

    fn write(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn read_all(path: &Path, unescape: bool) -> (Vec<String>, Vec<RowResult>) {
        let (schema, warnings) = inspect(path, "f.csv", unescape).unwrap();
        let mut rows = CsvRows::open(path, &schema).unwrap();
        let file: Arc<str> = "f.csv".into();
        let mut out = Vec::new();
        while let Some(row) = rows.next_row(&schema, &file, out.len() as u64) {
            out.push(row.unwrap());
        }
        (warnings, out)
    }

    #[test]
    fn bom_crlf_and_quoted_newlines() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            &dir,
            "m.csv",
            b"\xEF\xBB\xBFOrganization , ACCOUNT_ID\r\n\"Acme, Inc.\",a1\r\n\"Multi\r\nLine \"\"Org\"\"\",a2\r\n\r\nBeta,a3\r\n",
        );
        let (warnings, rows) = read_all(&path, false);
        assert!(warnings.is_empty(), "{warnings:?}");
        let rows: Vec<_> = rows.into_iter().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].data, RowData::member(OrgRef::Name("Acme, Inc.".into()), "a1"));
        assert_eq!(rows[0].source.to_string(), "f.csv:2");
        assert_eq!(rows[1].data, RowData::member(OrgRef::Name("Multi\r\nLine \"Org\"".into()), "a2"));
        assert_eq!(rows[1].source.line, 3);
        // the quoted newline pushes the next record down, past the blank line
        assert_eq!(rows[2].source.line, 6);
        assert_eq!(rows[2].index, 2);
        assert_eq!(rows[2].kind, Kind::Members);
        assert_eq!(rows[2].action, Action::Add);
    }

    #[test]
    fn invalid_utf8_fails_one_row_naming_line_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let path =
            write(&dir, "m.csv", b"organization,account_id,display_name\nAcme,a1,Ann\nAcme,a2,Jos\xE9\nAcme,a3,Bo\n");
        let (_, rows) = read_all(&path, false);
        assert_eq!(rows.len(), 3);
        assert!(rows[0].is_ok());
        let bad = rows[1].clone().unwrap_err();
        assert_eq!(bad.field.as_deref(), Some("display_name"));
        assert!(bad.message.starts_with("f.csv:3: field `display_name`: not valid UTF-8"), "{}", bad.message);
        assert_eq!(bad.kind, Some(Kind::Members));
        assert_eq!(bad.target.as_deref(), Some("a2"));
        assert!(rows[2].is_ok());
    }

    #[test]
    fn short_and_long_rows_are_row_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "o.csv", b"name,action\nA\nB,upsert,x\nC,,\n,,\nD,delete\n");
        let (_, rows) = read_all(&path, false);
        assert_eq!(rows.len(), 4, "the all-empty `,,` line is skipped");
        let short = rows[0].clone().unwrap_err();
        assert_eq!(short.message, "f.csv:2: the row has 1 cells but the header has 2 columns");
        assert_eq!(short.organization.as_deref(), Some("A"));
        assert!(rows[1].is_err());
        assert!(rows[2].is_ok(), "trailing empty cells are tolerated");
        assert_eq!(rows[3].as_ref().unwrap().action, Action::Delete);
        assert_eq!(rows[3].as_ref().unwrap().source.line, 6);
    }

    #[test]
    fn empty_and_header_only_files() {
        let dir = tempfile::tempdir().unwrap();
        let empty = write(&dir, "e.csv", b"");
        let (warnings, rows) = read_all(&empty, false);
        assert_eq!(warnings, vec!["f.csv: file has no rows".to_string()]);
        assert!(rows.is_empty());
        let header = write(&dir, "h.csv", b"name,action\r\n\r\n");
        let (warnings, rows) = read_all(&header, false);
        assert_eq!(warnings, vec!["f.csv: file has no rows".to_string()]);
        assert!(rows.is_empty());
    }

    #[test]
    fn header_checks() {
        let dir = tempfile::tempdir().unwrap();
        let unknown = write(&dir, "u.csv", b"name,colour,id,email\nA,red,1,x\n");
        let (warnings, rows) = read_all(&unknown, false);
        assert_eq!(warnings, vec!["f.csv: ignoring unknown columns `colour`, `email`".to_string()]);
        assert!(rows[0].is_ok());

        let cases: [(&[u8], &str); 5] = [
            (b"account_id,email\n", "missing column `organization` (or `organization_id`), required for members"),
            (b"organization,key\n", "missing column `value`, required for properties"),
            (b"service_desk_id\n", "missing column `organization` (or `organization_id`), required for service_desks"),
            (b"organization,colour\n", "cannot tell what the file holds"),
            (b"name,Name\n", "column `Name` appears more than once"),
        ];
        for (i, (bytes, expected)) in cases.into_iter().enumerate() {
            let path = write(&dir, &format!("bad{i}.csv"), bytes);
            let err = inspect(&path, "x", false).unwrap_err().to_string();
            assert!(err.contains(expected), "{err}");
        }
        assert!(matches!(
            inspect(&write(&dir, "m.csv", b"account_id\n"), "x", false),
            Err(InputError::MissingColumn { kind: Kind::Members, column: "organization", .. })
        ));
        // organization_id stands in for organization
        assert!(inspect(&write(&dir, "i.csv", b"organization_id,account_id\n"), "x", false).is_ok());
    }

    #[test]
    fn spreadsheet_files_semicolons_utf16_and_aliases() {
        let dir = tempfile::tempdir().unwrap();
        let person = |email: &str, name: &str| RowData::Member {
            org: OrgRef::Name("Acme; Ltd".into()),
            account_id: None,
            email: Some(email.into()),
            display_name: Some(name.into()),
        };
        // Excel in most of Europe: semicolons, a CRM's own column names.
        let semi = write(&dir, "s.csv", b"Organization;E-Mail;Full Name\n\"Acme; Ltd\";ann@example.com;Ann Smith\n");
        let (warnings, rows) = read_all(&semi, false);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(rows[0].clone().unwrap().data, person("ann@example.com", "Ann Smith"));
        // Excel's "Unicode text": UTF-16 LE with a BOM, tab-delimited, CRLF.
        let text = "organization\tEmail Address\tdisplay-name\r\nAcme; Ltd\tbob@example.com\tBöb 😀\r\n";
        let mut bytes = vec![0xFF, 0xFE];
        bytes.extend(text.encode_utf16().flat_map(u16::to_le_bytes));
        let utf16 = write(&dir, "u.csv", &bytes);
        let (warnings, rows) = read_all(&utf16, false);
        assert!(warnings.is_empty(), "{warnings:?}");
        let row = rows[0].clone().unwrap();
        assert_eq!(row.data, person("bob@example.com", "Böb 😀"));
        assert_eq!(row.source.line, 2);
        // Mixed case, spaces and an alias; `Account ID` beside an email.
        let mixed = write(&dir, "m.csv", b"ORGANIZATION , Account ID,EMAIL\nAcme,a1,Cy@Example.com\n");
        let (_, rows) = read_all(&mixed, false);
        let RowData::Member { account_id, email, .. } = rows[0].clone().unwrap().data else { panic!("a member") };
        assert_eq!((account_id.as_deref(), email.as_deref()), (Some("a1"), Some("Cy@Example.com")));
    }

    #[test]
    fn near_misses_of_known_columns() {
        let dir = tempfile::tempdir().unwrap();
        // One typo away from a required column: an error naming file and column.
        for (header, column, meant) in [
            (&b"organization,acount_id\n"[..], "acount_id", "account_id"),
            (b"Organisation,Email\n", "Organisation", "organization"),
            (b"organization,account_id,emial\n", "emial", "email"),
            (b"organization,key,vaule\n", "vaule", "value"),
        ] {
            let path = write(&dir, "n.csv", header);
            let err = inspect(&path, "x", false).unwrap_err();
            assert!(
                matches!(&err, InputError::NearMiss { column: c, suggestion: s, .. } if c == column && *s == meant)
            );
            assert!(err.to_string().ends_with(&format!("unknown column `{column}`: did you mean `{meant}`?")), "{err}");
        }
        // A near miss of an optional column, or of one already there: a warning.
        let path = write(&dir, "w.csv", b"organization,account_id,email,emails,dispaly_name\nA,a,b@c.de,,\n");
        let (warnings, rows) = read_all(&path, false);
        assert_eq!(
            warnings,
            vec!["f.csv: ignoring unknown columns `emails` (did you mean `email`?), `dispaly_name` (did you mean \
                 `display_name`?)"
                .to_string()]
        );
        assert!(rows[0].is_ok());
    }

    #[test]
    fn formula_unescape_every_cell_when_asked_else_only_the_marker() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(&dir, "o.csv", b"name\n'=SUM(1)\n''quoted\n");
        let names =
            |unescape| -> Vec<RowData> { read_all(&path, unescape).1.into_iter().map(|r| r.unwrap().data).collect() };
        let name = |s: &str| RowData::Organization { name: s.into() };
        assert_eq!(names(true), vec![name("=SUM(1)"), name("'quoted")]);
        // Without a manifest: `'` before a formula character is the export's
        // marker, any other leading `'` is data.
        assert_eq!(names(false), vec![name("=SUM(1)"), name("''quoted")]);
    }
}
