//! JSONL input files: one JSON object per line, each line its own row with
//! its own kind (a file may mix organizations, members, properties and
//! service desk links).
//!
//! It owns line splitting (LF or CRLF, BOM, blank lines skipped, physical
//! line numbers), parsing one object into the known fields without keeping
//! unknown keys' values, and the pass made when the input is opened that
//! finds unknown keys and empty files. It must not judge values: they go to
//! `validate` as JSON, so CSV and JSONL rows obey the same rules. Only one
//! line is held at a time.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;
use std::io::{self, BufRead};
use std::path::Path;
use std::sync::Arc;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::fields::{Field, FieldSet};
use super::text::{open_text_hashed, Digest, TextReader};
use super::validate::{json_error, validate, Problem, Raw, RawRow};
use super::{InputError, RowResult, Source};

/// Unknown keys named in one warning, at most.
const MAX_UNKNOWN_NAMED: usize = 20;

/// Read every line of `path` once to report unknown keys and an empty file.
/// Lines that are not objects are left for the row pass to report.
pub(super) fn inspect(path: &Path, display: &str) -> Result<Vec<String>, InputError> {
    let mut lines = JsonlRows::open(path).map_err(|e| InputError::io(path, e))?;
    let mut rows = 0u64;
    let mut unknown = BTreeSet::new();
    let mut more_unknown = false;
    while let Some((_, line)) = lines.next_line().map_err(|e| InputError::io(path, e))? {
        rows += 1;
        let Ok(object) = parse(line) else { continue };
        let names = object.unknown.into_iter().chain(object.present.unused().into_iter().map(|f| f.name().to_owned()));
        for name in names {
            if unknown.len() < MAX_UNKNOWN_NAMED {
                unknown.insert(name);
            } else if !unknown.contains(&name) {
                more_unknown = true;
            }
        }
    }
    let mut warnings = Vec::new();
    if !unknown.is_empty() {
        let named: Vec<String> = unknown
            .iter()
            .map(|k| match Field::suggest(k) {
                Some(f) => format!("`{k}` (did you mean `{}`?)", f.name()),
                None => format!("`{k}`"),
            })
            .collect();
        warnings.push(format!(
            "{display}: ignoring unknown keys {}{}",
            named.join(", "),
            if more_unknown { " and more" } else { "" }
        ));
    }
    if rows == 0 {
        warnings.push(format!("{display}: file has no rows"));
    }
    Ok(warnings)
}

/// A JSONL file being streamed.
pub(super) struct JsonlRows {
    reader: TextReader,
    buf: Vec<u8>,
    line: u64,
}

impl JsonlRows {
    pub(super) fn open(path: &Path) -> io::Result<Self> {
        JsonlRows::open_hashed(path, None)
    }

    /// [`JsonlRows::open`], feeding the file's raw bytes to `digest`.
    pub(super) fn open_hashed(path: &Path, digest: Option<Digest>) -> io::Result<Self> {
        Ok(JsonlRows { reader: open_text_hashed(path, digest)?, buf: Vec::new(), line: 0 })
    }

    /// The next non-blank line (without its line break) and its number.
    fn next_line(&mut self) -> io::Result<Option<(u64, &[u8])>> {
        loop {
            self.buf.clear();
            if self.reader.read_until(b'\n', &mut self.buf)? == 0 {
                return Ok(None);
            }
            self.line += 1;
            if !self.buf.iter().all(u8::is_ascii_whitespace) {
                break;
            }
        }
        let line = self.buf.strip_suffix(b"\n").unwrap_or(&self.buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        Ok(Some((self.line, line)))
    }

    /// The next non-blank line as a validated row, `None` at the end.
    pub(super) fn next_row(&mut self, file: &Arc<str>, index: u64) -> Option<io::Result<RowResult>> {
        let (line, text) = match self.next_line() {
            Err(e) => return Some(Err(e)),
            Ok(None) => return None,
            Ok(Some(next)) => next,
        };
        let source = Source { file: Arc::clone(file), line };
        Some(Ok(match parse(text) {
            Ok(object) => {
                let mut raw = RawRow::new(false);
                for field in Field::ALL {
                    match &object.values[field.index()] {
                        None => {}
                        Some(Cell::Text(text)) => raw.set(field, Raw::Text(text)),
                        Some(Cell::Json(value)) => raw.set(field, Raw::Json(value)),
                    }
                }
                validate(&raw, index, source)
            }
            Err(problem) => {
                let mut raw = RawRow::new(false);
                raw.problem = Some(problem);
                validate(&raw, index, source)
            }
        }))
    }
}

fn parse(line: &[u8]) -> Result<JsonObject<'_>, Problem> {
    if std::str::from_utf8(line).is_err() {
        return Err(Problem::row("the line is not valid UTF-8 (save the file as UTF-8)"));
    }
    serde_json::from_slice(line).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => Problem::row(format!("the line is not a JSON object: {}", json_error(&e))),
        _ => Problem::row(format!("the line is not valid JSON: {}", json_error(&e))),
    })
}

/// One JSON object, reduced to the known fields.
struct JsonObject<'de> {
    /// Values of known keys, indexed by [`Field::index`] (`null` kept).
    values: [Option<Cell<'de>>; Field::COUNT],
    /// Known keys with a non-null value.
    present: FieldSet,
    /// Keys that name no field.
    unknown: Vec<String>,
}

/// The value of a known key: a string (borrowed from the line unless it has
/// escapes), or any other JSON value.
enum Cell<'de> {
    Text(Cow<'de, str>),
    Json(Value),
}

impl<'de> Deserialize<'de> for Cell<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CellVisitor;
        impl<'de> Visitor<'de> for CellVisitor {
            type Value = Cell<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, text: &'de str) -> Result<Cell<'de>, E> {
                Ok(Cell::Text(Cow::Borrowed(text)))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Cell<'de>, E> {
                Ok(Cell::Text(Cow::Owned(text.to_owned())))
            }
            fn visit_string<E: de::Error>(self, text: String) -> Result<Cell<'de>, E> {
                Ok(Cell::Text(Cow::Owned(text)))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Cell<'de>, E> {
                Ok(Cell::Json(Value::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cell<'de>, E> {
                Ok(Cell::Json(Value::from(v)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cell<'de>, E> {
                Ok(Cell::Json(Value::from(v)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cell<'de>, E> {
                Ok(Cell::Json(Value::from(v)))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Cell<'de>, E> {
                Ok(Cell::Json(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Cell<'de>, A::Error> {
                Value::deserialize(SeqAccessDeserializer::new(seq)).map(Cell::Json)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Cell<'de>, A::Error> {
                Value::deserialize(MapAccessDeserializer::new(map)).map(Cell::Json)
            }
        }
        deserializer.deserialize_any(CellVisitor)
    }
}

/// An object key: a known field, or an unknown name (allocated only then).
struct Key(Result<Field, String>);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key, E> {
                Ok(Key(Field::from_name(key).ok_or_else(|| key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for JsonObject<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = JsonObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonObject<'de>, A::Error> {
                let mut object =
                    JsonObject { values: Default::default(), present: FieldSet::default(), unknown: Vec::new() };
                while let Some(Key(key)) = map.next_key()? {
                    match key {
                        Ok(field) => {
                            let cell: Cell<'de> = map.next_value()?;
                            if !matches!(cell, Cell::Json(Value::Null)) {
                                object.present.insert(field);
                            }
                            object.values[field.index()] = Some(cell);
                        }
                        Err(name) => {
                            map.next_value::<IgnoredAny>()?;
                            object.unknown.push(name);
                        }
                    }
                }
                Ok(object)
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::input::{Action, InvalidRow, Kind, OrgRef, Row, RowData};
    use serde_json::json;

    fn read_all(bytes: &[u8]) -> (Vec<String>, Vec<RowResult>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(&path, bytes).unwrap();
        let warnings = inspect(&path, "in.jsonl").unwrap();
        let mut rows = JsonlRows::open(&path).unwrap();
        let file: Arc<str> = "in.jsonl".into();
        let mut out = Vec::new();
        while let Some(row) = rows.next_row(&file, out.len() as u64) {
            out.push(row.unwrap());
        }
        (warnings, out)
    }

    fn ok(row: &RowResult) -> &Row {
        row.as_ref().expect("valid row")
    }

    fn err(row: &RowResult) -> &InvalidRow {
        row.as_ref().expect_err("invalid row")
    }

    #[test]
    fn mixed_kinds_per_row() {
        let input = concat!(
            "\u{feff}{\"name\":\"Acme\"}\r\n",
            "{\"organization\":\"Acme\",\"account_id\":\"a1\",\"action\":\"REMOVE\"}\n",
            "\n",
            "  \n",
            "{\"organization_id\":\"17\",\"key\":\"tier\",\"value\":{\"level\":1}}\n",
            "{\"organization_id\":17,\"service_desk_id\":3}\n",
            "{\"organization\":\"Acme\",\"account_id\":\"a1\",\"key\":\"k\"}\n",
            "[1,2]\n",
            "{\"name\": \"Acme\"\n",
            "{\"colour\":\"red\"}\n",
        );
        let (warnings, rows) = read_all(input.as_bytes());
        assert_eq!(warnings, vec!["in.jsonl: ignoring unknown keys `colour`".to_string()]);
        assert_eq!(rows.len(), 8);

        assert_eq!(ok(&rows[0]).kind, Kind::Organizations);
        assert_eq!(ok(&rows[0]).source.line, 1);
        assert_eq!(ok(&rows[1]).kind, Kind::Members);
        assert_eq!(ok(&rows[1]).action, Action::Remove);
        let property = ok(&rows[2]);
        assert_eq!(property.source.line, 5, "blank lines are skipped but counted");
        assert_eq!(
            property.data,
            RowData::Property { org: OrgRef::Id(17), key: "tier".into(), value: json!({"level": 1}) }
        );
        assert_eq!(ok(&rows[3]).data, RowData::ServiceDesk { org: OrgRef::Id(17), service_desk_id: "3".into() });
        let mixed = err(&rows[4]);
        assert_eq!(mixed.kind, None);
        assert!(mixed.message.starts_with("in.jsonl:7: mixed kinds"), "{}", mixed.message);
        assert!(err(&rows[5]).message.contains("not a JSON object"), "{}", err(&rows[5]).message);
        let broken = err(&rows[6]);
        assert!(broken.message.starts_with("in.jsonl:9: the line is not valid JSON"), "{}", broken.message);
        assert!(!broken.message.contains("line 1"), "{}", broken.message);
        assert!(err(&rows[7]).message.contains("cannot tell the row's kind"));
        assert_eq!(
            rows.iter().map(|r| r.as_ref().map_or_else(|e| e.index, |r| r.index)).collect::<Vec<_>>(),
            (0..8).collect::<Vec<_>>()
        );
    }

    #[test]
    fn invalid_utf8_line_is_a_row_error() {
        let (_, rows) = read_all(b"{\"name\":\"Jos\xE9\"}\n{\"name\":\"B\"}\n");
        assert!(err(&rows[0]).message.starts_with("in.jsonl:1: the line is not valid UTF-8"));
        assert!(rows[1].is_ok());
    }

    #[test]
    fn unknown_keys_are_relative_to_the_row_kind() {
        let input = concat!(
            "{\"name\":\"A\",\"id\":\"1\",\"uuid\":\"u\",\"scim_managed\":false,\"created\":{}}\n",
            "{\"organization\":\"A\",\"organization_id\":1,\"account_id\":\"x\",\"email\":null,\"display_name\":\"X\"}\n",
            "{\"organization\":\"A\",\"account_id\":\"y\",\"value\":1,\"extra\":true}\n",
        );
        let (warnings, rows) = read_all(input.as_bytes());
        assert_eq!(warnings, vec!["in.jsonl: ignoring unknown keys `extra`, `value`".to_string()]);
        assert!(rows.iter().all(Result::is_ok));
    }

    #[test]
    fn empty_strings_and_huge_numbers_are_values() {
        let input = concat!(
            "{\"organization\":\"A\",\"key\":\"k\",\"value\":\"\"}\n",
            "{\"organization\":\"A\",\"key\":\"n\",\"value\":[12345678901234567890123,0.10000000000000000000001]}\n",
        );
        let (_, rows) = read_all(input.as_bytes());
        let value = |i: usize| match &ok(&rows[i]).data {
            RowData::Property { value, .. } => value.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(value(0), json!(""));
        assert_eq!(value(1).to_string(), "[12345678901234567890123,0.10000000000000000000001]");
    }

    #[test]
    fn empty_file_warns() {
        let (warnings, rows) = read_all(b"\n \r\n");
        assert_eq!(warnings, vec!["in.jsonl: file has no rows".to_string()]);
        assert!(rows.is_empty());
    }
}
