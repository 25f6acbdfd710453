//! Per-row validation: turns the cells of one input row into a [`Row`] or an
//! [`InvalidRow`] whose message names file, line and field.
//!
//! It owns every rule about values (name lengths, account id shape, property
//! key and value limits, actions, organization references) and nothing about
//! files: the CSV and JSONL readers hand it borrowed cells, so both formats
//! obey one set of rules and a rule is never checked twice. It must not do
//! I/O or keep state between rows, which is what lets the input be streamed
//! and re-streamed with identical results.

use serde_json::Value;

use super::fields::{self, classify, Field, Fill, NoKind};
use super::{Action, InvalidRow, Kind, OrgRef, Row, RowData, RowResult, Source};

/// Longest organization name, in characters.
pub(super) const MAX_NAME_CHARS: usize = 200;
/// Longest account id, in bytes.
pub(super) const MAX_ACCOUNT_ID_BYTES: usize = 128;
/// Longest property key, in bytes.
pub(super) const MAX_KEY_BYTES: usize = 255;
/// Largest property value, in bytes of compact JSON.
pub(super) const MAX_VALUE_BYTES: usize = 32768;

/// One cell as a reader found it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Raw<'a> {
    /// No such column or key.
    Absent,
    /// A CSV cell, or a JSON string.
    Text(&'a str),
    /// A JSON value other than a string (including `null`).
    Json(&'a Value),
}

impl Raw<'_> {
    fn fill(self) -> Fill {
        match self {
            Raw::Absent | Raw::Json(Value::Null) => Fill::Absent,
            Raw::Text("") => Fill::Empty,
            Raw::Text(_) | Raw::Json(_) => Fill::Filled,
        }
    }

    /// The cell as report text; `None` when empty.
    fn display(self) -> Option<String> {
        match self {
            Raw::Absent | Raw::Json(Value::Null) | Raw::Text("") => None,
            Raw::Text(s) => Some(s.to_owned()),
            Raw::Json(v) => Some(v.to_string()),
        }
    }
}

/// A problem with a row: the field it concerns (if any) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Problem {
    pub(super) field: Option<Field>,
    pub(super) what: String,
}

impl Problem {
    pub(super) fn field(field: Field, what: impl Into<String>) -> Self {
        Problem { field: Some(field), what: what.into() }
    }

    pub(super) fn row(what: impl Into<String>) -> Self {
        Problem { field: None, what: what.into() }
    }
}

/// The cells of one row, indexed by [`Field::index`].
#[derive(Debug)]
pub(super) struct RawRow<'a> {
    pub(super) cells: [Raw<'a>; Field::COUNT],
    /// CSV: a property `value` is JSON text. JSONL: it is the value itself.
    pub(super) value_is_json_text: bool,
    /// A problem the reader found (bad UTF-8, wrong cell count, not JSON).
    /// It wins over anything validation would say.
    pub(super) problem: Option<Problem>,
}

impl<'a> RawRow<'a> {
    pub(super) fn new(value_is_json_text: bool) -> Self {
        RawRow { cells: [Raw::Absent; Field::COUNT], value_is_json_text, problem: None }
    }

    pub(super) fn get(&self, field: Field) -> Raw<'a> {
        self.cells[field.index()]
    }

    pub(super) fn set(&mut self, field: Field, raw: Raw<'a>) {
        self.cells[field.index()] = raw;
    }
}

/// Validate one row. `Err` carries the row's report columns as far as they
/// could be read.
pub(super) fn validate(raw: &RawRow<'_>, index: u64, source: Source) -> RowResult {
    let kind = classify(|f| raw.get(f).fill());
    let checked = match (&raw.problem, &kind) {
        (Some(problem), _) => Err(problem.clone()),
        (None, Err(no_kind)) => Err(no_kind_problem(no_kind)),
        (None, Ok(kind)) => check(raw, *kind),
    };
    match checked {
        Ok((action, data)) => Ok(Row { index, source, kind: kind.expect("checked rows have a kind"), action, data }),
        Err(problem) => Err(invalid_row(raw, index, source, kind.ok(), problem)),
    }
}

fn no_kind_problem(no_kind: &NoKind) -> Problem {
    match no_kind {
        NoKind::Mixed(fields) => {
            let names: Vec<String> = fields.iter().map(|f| format!("`{}`", f.name())).collect();
            Problem::row(format!("mixed kinds: the row fills {}; put each kind in its own row", names.join(" and ")))
        }
        NoKind::Unknown => {
            Problem::row("cannot tell the row's kind: it fills none of `name`, `account_id`, `key`, `service_desk_id`")
        }
    }
}

fn check(raw: &RawRow<'_>, kind: Kind) -> Result<(Action, RowData), Problem> {
    let action = action(raw.get(Field::Action), kind)?;
    let data = match kind {
        Kind::Organizations => RowData::Organization { name: org_name(raw.get(Field::Name), Field::Name)?.to_owned() },
        Kind::Members => member(raw)?,
        Kind::Properties => RowData::Property {
            org: org_ref(raw)?,
            key: property_key(raw.get(Field::Key))?.to_owned(),
            value: property_value(raw, action)?,
        },
        Kind::ServiceDesks => RowData::ServiceDesk { org: org_ref(raw)?, service_desk_id: desk_ref(raw)? },
    };
    Ok((action, data))
}

fn invalid_row(raw: &RawRow<'_>, index: u64, source: Source, kind: Option<Kind>, problem: Problem) -> InvalidRow {
    let message = match problem.field {
        Some(field) => format!("{source}: field `{}`: {}", field.name(), problem.what),
        None => format!("{source}: {}", problem.what),
    };
    let (organization, organization_id, target) = match kind {
        Some(Kind::Organizations) => (raw.get(Field::Name).display(), None, None),
        Some(kind) => (
            raw.get(Field::Organization).display(),
            raw.get(Field::OrganizationId).display(),
            fields::target(kind).find_map(|f| raw.get(f).display()),
        ),
        None => (
            raw.get(Field::Organization).display().or_else(|| raw.get(Field::Name).display()),
            raw.get(Field::OrganizationId).display(),
            None,
        ),
    };
    // The action the row would have run, or the text given when unusable.
    let given = raw.get(Field::Action);
    let action =
        kind.and_then(|k| self::action(given, k).ok()).map(|a| a.as_str().to_owned()).or_else(|| given.display());
    InvalidRow {
        index,
        source,
        kind,
        action,
        organization,
        organization_id,
        target,
        field: problem.field.map(|f| f.name().to_owned()),
        message,
    }
}

/// A cell that must be text (a JSON string in JSONL). `None` when absent.
fn text(raw: Raw<'_>, field: Field) -> Result<Option<&str>, Problem> {
    match raw {
        Raw::Absent | Raw::Json(Value::Null) => Ok(None),
        Raw::Text(s) => Ok(Some(s)),
        Raw::Json(v) => Err(Problem::field(field, format!("must be a string, not `{v}`"))),
    }
}

/// A required text cell: present and not empty.
fn required_text(raw: Raw<'_>, field: Field) -> Result<&str, Problem> {
    match text(raw, field)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(Problem::field(field, "missing")),
    }
}

fn action(raw: Raw<'_>, kind: Kind) -> Result<Action, Problem> {
    let given = text(raw, Field::Action)?.map(str::trim).unwrap_or("");
    if given.is_empty() {
        return Ok(kind.default_action());
    }
    kind.actions().iter().copied().find(|a| a.as_str().eq_ignore_ascii_case(given)).ok_or_else(|| {
        let allowed: Vec<&str> = kind.actions().iter().map(Action::as_str).collect();
        Problem::field(
            Field::Action,
            format!("unknown action `{given}` for {}; expected one of {}", kind.as_str(), allowed.join(", ")),
        )
    })
}

/// An organization name: 1..=200 characters, not blank, kept exactly.
fn org_name(raw: Raw<'_>, field: Field) -> Result<&str, Problem> {
    let name = required_text(raw, field)?;
    if name.trim().is_empty() {
        return Err(Problem::field(field, "must not be blank"));
    }
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Err(Problem::field(
            field,
            format!("{chars} characters; an organization name has at most {MAX_NAME_CHARS}"),
        ));
    }
    Ok(name)
}

/// The organization a row refers to: by name when `organization` is filled
/// (ids differ between sites), else by `organization_id`. A filled id is
/// checked even when the name is used, so a corrupt file is not half-read.
fn org_ref(raw: &RawRow<'_>) -> Result<OrgRef, Problem> {
    let id = org_id(raw.get(Field::OrganizationId))?;
    match raw.get(Field::Organization) {
        name if name.fill() == Fill::Filled => {
            let name = org_name(name, Field::Organization)?.to_owned();
            Ok(id.map_or_else(|| OrgRef::Name(name.clone()), |id| OrgRef::NameAndId(name.clone(), id)))
        }
        _ => id.map(OrgRef::Id).ok_or_else(|| {
            Problem::field(Field::Organization, "missing: give the organization's name, or its id in `organization_id`")
        }),
    }
}

fn org_id(raw: Raw<'_>) -> Result<Option<u64>, Problem> {
    let bad = |shown: &str| Problem::field(Field::OrganizationId, format!("`{shown}` is not a positive integer"));
    match raw {
        Raw::Absent | Raw::Json(Value::Null) | Raw::Text("") => Ok(None),
        Raw::Text(s) => match s.parse::<u64>() {
            Ok(id) if id > 0 && s.bytes().all(|b| b.is_ascii_digit()) => Ok(Some(id)),
            _ => Err(bad(s)),
        },
        Raw::Json(v) => match v.as_u64() {
            Some(id) if id > 0 => Ok(Some(id)),
            _ => Err(bad(&v.to_string())),
        },
    }
}

/// A member row: the organization and the person, by `account_id`,
/// `email` or both; `display_name` is the name a created customer gets.
fn member(raw: &RawRow<'_>) -> Result<RowData, Problem> {
    let org = org_ref(raw)?;
    let filled = |f: Field| raw.get(f).fill() == Fill::Filled;
    let account_id =
        if filled(Field::AccountId) { Some(account_id(raw.get(Field::AccountId))?.to_owned()) } else { None };
    let email = if filled(Field::Email) { email(raw.get(Field::Email))? } else { None };
    if account_id.is_none() && email.is_none() {
        return Err(Problem::field(Field::AccountId, "missing: give the person's `account_id` or `email`"));
    }
    let display_name = text(raw.get(Field::DisplayName), Field::DisplayName)?
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned);
    Ok(RowData::Member { org, account_id, email: email.map(str::to_owned), display_name })
}

/// Longest email address, in bytes (RFC 5321).
const MAX_EMAIL_BYTES: usize = 254;

/// An email address: `local@domain.tld`, no spaces, at most 254 bytes;
/// surrounding spaces are dropped. `None` when the cell is blank.
fn email(raw: Raw<'_>) -> Result<Option<&str>, Problem> {
    let Some(text) = text(raw, Field::Email)?.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let valid = text.len() <= MAX_EMAIL_BYTES
        && !text.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, ',' | ';' | '<' | '>' | '"'))
        && match text.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && local.len() <= 64
                    && !domain.contains('@')
                    && domain.contains('.')
                    && domain
                        .split('.')
                        .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'))
            }
            None => false,
        };
    if valid {
        Ok(Some(text))
    } else {
        Err(Problem::field(Field::Email, format!("`{text}` is not an email address")))
    }
}

fn account_id(raw: Raw<'_>) -> Result<&str, Problem> {
    let id = required_text(raw, Field::AccountId)?;
    if id.chars().any(char::is_whitespace) {
        return Err(Problem::field(Field::AccountId, "must not contain whitespace"));
    }
    if id.len() > MAX_ACCOUNT_ID_BYTES {
        return Err(Problem::field(
            Field::AccountId,
            format!("{} bytes; an account id has at most {MAX_ACCOUNT_ID_BYTES}", id.len()),
        ));
    }
    Ok(id)
}

fn property_key(raw: Raw<'_>) -> Result<&str, Problem> {
    let key = required_text(raw, Field::Key)?;
    if key.len() > MAX_KEY_BYTES {
        return Err(Problem::field(
            Field::Key,
            format!("{} bytes; a property key has at most {MAX_KEY_BYTES}", key.len()),
        ));
    }
    Ok(key)
}

/// The property value: JSON text in CSV, the JSON value itself in JSONL.
/// `set` needs one (at most 32768 bytes as compact JSON); `delete` may omit
/// it, which gives `null`.
fn property_value(raw: &RawRow<'_>, action: Action) -> Result<Value, Problem> {
    let value = match raw.get(Field::Value) {
        // An empty CSV cell is no value; JSONL's `""` is the empty string.
        Raw::Absent => None,
        Raw::Text("") if raw.value_is_json_text => None,
        Raw::Text(text) if raw.value_is_json_text => Some(serde_json::from_str::<Value>(text).map_err(|e| {
            // `gold` for `"gold"` is the usual slip: show the fix.
            let hint = if text.trim_start().starts_with(char::is_alphabetic) {
                format!(" (a string is written with quotes: {})", Value::from(text))
            } else {
                String::new()
            };
            Problem::field(Field::Value, format!("invalid JSON: {}{hint}", json_error(&e)))
        })?),
        Raw::Text(text) => Some(Value::String(text.to_owned())),
        Raw::Json(v) => Some(v.clone()),
    };
    match (value, action) {
        (Some(value), Action::Set) => {
            let size = compact_len(&value);
            if size > MAX_VALUE_BYTES {
                return Err(Problem::field(
                    Field::Value,
                    format!("{size} bytes as compact JSON; a property value has at most {MAX_VALUE_BYTES}"),
                ));
            }
            Ok(value)
        }
        (None, Action::Set) => Err(Problem::field(Field::Value, "missing (action `set` needs a value)")),
        (value, _) => Ok(value.unwrap_or(Value::Null)),
    }
}

/// A `serde_json` error, placed within the text it parsed (a cell or a
/// line) rather than by its own "line 1" which is not the file's.
pub(super) fn json_error(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let what = text.rsplit_once(" at line ").map_or(text.as_str(), |(what, _)| what);
    match e.line() {
        0 => what.to_owned(),
        1 => format!("{what} at column {}", e.column()),
        line => format!("{what} at line {line} column {} of the value", e.column()),
    }
}

/// Length of `value` serialized compactly, without building the string.
fn compact_len(value: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    serde_json::to_writer(&mut count, value).expect("a JSON value always serializes");
    count.0
}

/// The desk of a link row: its `project_key` when filled (ids differ
/// between sites, keys do not), else its `service_desk_id`.
fn desk_ref(raw: &RawRow<'_>) -> Result<String, Problem> {
    let id = service_desk_id(raw.get(Field::ServiceDeskId), Field::ServiceDeskId)?;
    match text(raw.get(Field::ProjectKey), Field::ProjectKey)?.map(str::trim) {
        Some(key) if !key.is_empty() => service_desk_id(raw.get(Field::ProjectKey), Field::ProjectKey),
        _ => Ok(id),
    }
}

/// A service desk id (digits) or a project key (a letter, then letters,
/// digits or `_`). A JSON number is accepted as the id.
fn service_desk_id(raw: Raw<'_>, field: Field) -> Result<String, Problem> {
    let id = match raw {
        Raw::Json(Value::Number(n)) if n.is_u64() => return Ok(n.to_string()),
        other => required_text(other, field)?,
    };
    let digits = id.bytes().all(|b| b.is_ascii_digit());
    let project_key =
        id.starts_with(|c: char| c.is_ascii_alphabetic()) && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if digits || project_key {
        Ok(id.to_owned())
    } else {
        Err(Problem::field(field, format!("`{id}` is neither a service desk id (digits) nor a project key")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn source() -> Source {
        Source { file: "in.csv".into(), line: 7 }
    }

    fn csv_row<'a>(cells: &[(Field, &'a str)]) -> RawRow<'a> {
        let mut raw = RawRow::new(true);
        for &(f, s) in cells {
            raw.set(f, Raw::Text(s));
        }
        raw
    }

    fn invalid(raw: &RawRow<'_>) -> InvalidRow {
        validate(raw, 3, source()).expect_err("row should be invalid")
    }

    #[test]
    fn organization_name_lengths_count_chars() {
        let ok = "é".repeat(200); // 400 bytes, 200 chars
        let row = validate(&csv_row(&[(Field::Name, &ok)]), 0, source()).unwrap();
        assert_eq!(row.data, RowData::Organization { name: ok.clone() });
        assert_eq!(row.action, Action::Upsert);

        let long = "a".repeat(201);
        let bad = invalid(&csv_row(&[(Field::Name, &long)]));
        assert_eq!(bad.field.as_deref(), Some("name"));
        assert_eq!(bad.kind, Some(Kind::Organizations));
        assert_eq!(bad.organization.as_deref(), Some(long.as_str()));
        assert!(bad.message.starts_with("in.csv:7: field `name`: 201 characters"), "{}", bad.message);

        let blank = invalid(&csv_row(&[(Field::Name, "   ")]));
        assert_eq!(blank.field.as_deref(), Some("name"));
        let empty = invalid(&csv_row(&[(Field::Name, "")]));
        assert_eq!(empty.message, "in.csv:7: field `name`: missing");

        // not trimmed: stored exactly
        let row = validate(&csv_row(&[(Field::Name, " Acme ")]), 0, source()).unwrap();
        assert_eq!(row.data, RowData::Organization { name: " Acme ".into() });
    }

    #[test]
    fn actions_are_case_insensitive_and_checked_per_kind() {
        let row = validate(&csv_row(&[(Field::Name, "Acme"), (Field::Action, " DELETE ")]), 0, source()).unwrap();
        assert_eq!(row.action, Action::Delete);
        let bad = invalid(&csv_row(&[(Field::Name, "Acme"), (Field::Action, "remove")]));
        assert_eq!(bad.field.as_deref(), Some("action"));
        assert_eq!(bad.action.as_deref(), Some("remove"));
        assert!(bad.message.contains("unknown action `remove` for organizations"), "{}", bad.message);
    }

    #[test]
    fn org_ref_prefers_name_and_checks_id() {
        let raw = csv_row(&[(Field::Organization, "Acme"), (Field::OrganizationId, "12"), (Field::AccountId, "abc")]);
        let row = validate(&raw, 0, source()).unwrap();
        assert_eq!(row.data, RowData::member(OrgRef::NameAndId("Acme".into(), 12), "abc"));
        let raw = csv_row(&[(Field::OrganizationId, "12"), (Field::AccountId, "abc")]);
        let RowData::Member { org, .. } = validate(&raw, 0, source()).unwrap().data else { panic!("member expected") };
        assert_eq!(org, OrgRef::Id(12));

        for bad_id in ["x12", "-3", "0", "+4", "1.5"] {
            let raw = csv_row(&[(Field::OrganizationId, bad_id), (Field::AccountId, "abc")]);
            let bad = invalid(&raw);
            assert_eq!(bad.field.as_deref(), Some("organization_id"), "{bad_id}");
            assert_eq!(bad.organization_id.as_deref(), Some(bad_id));
            assert_eq!(bad.target.as_deref(), Some("abc"));
            assert_eq!(bad.action.as_deref(), Some("add"));
        }
        let none = invalid(&csv_row(&[(Field::AccountId, "abc")]));
        assert_eq!(none.field.as_deref(), Some("organization"));
    }

    #[test]
    fn account_ids() {
        let with_space = invalid(&csv_row(&[(Field::Organization, "A"), (Field::AccountId, "a b")]));
        assert_eq!(with_space.field.as_deref(), Some("account_id"));
        let long = "x".repeat(129);
        let too_long = invalid(&csv_row(&[(Field::Organization, "A"), (Field::AccountId, &long)]));
        assert!(too_long.message.contains("129 bytes"), "{}", too_long.message);
    }

    #[test]
    fn members_by_email() {
        let row = validate(
            &csv_row(&[(Field::Organization, "A"), (Field::Email, " Ann@Example.com "), (Field::DisplayName, " Ann ")]),
            0,
            source(),
        )
        .unwrap();
        assert_eq!(
            row.data,
            RowData::Member {
                org: OrgRef::Name("A".into()),
                account_id: None,
                email: Some("Ann@Example.com".into()),
                display_name: Some("Ann".into())
            }
        );
        for bad in ["ann", "ann@", "@example.com", "ann@example", "a b@example.com", "ann@@example.com", "ann@-x.com"] {
            let raw = csv_row(&[(Field::Organization, "A"), (Field::AccountId, "a1"), (Field::Email, bad)]);
            let e = invalid(&raw);
            assert_eq!(e.field.as_deref(), Some("email"), "{bad}");
            assert_eq!(e.message, format!("in.csv:7: field `email`: `{bad}` is not an email address"));
            assert_eq!(e.target.as_deref(), Some("a1"));
        }
        let e = invalid(&csv_row(&[(Field::Organization, "A"), (Field::Email, "x@y")]));
        assert_eq!(e.target.as_deref(), Some("x@y"), "an email-only row's target is its email");
        let e = invalid(&csv_row(&[(Field::Organization, "A"), (Field::Email, ""), (Field::AccountId, "")]));
        assert_eq!(e.message, "in.csv:7: field `account_id`: missing: give the person's `account_id` or `email`");
    }

    #[test]
    fn property_keys_and_values() {
        let key = "k".repeat(300);
        let bad = invalid(&csv_row(&[(Field::Organization, "A"), (Field::Key, &key), (Field::Value, "1")]));
        assert_eq!(bad.field.as_deref(), Some("key"));
        assert!(bad.message.contains("300 bytes"), "{}", bad.message);

        let big = format!("\"{}\"", "v".repeat(40 * 1024));
        let bad = invalid(&csv_row(&[(Field::Organization, "A"), (Field::Key, "k"), (Field::Value, &big)]));
        assert_eq!(bad.field.as_deref(), Some("value"));
        assert!(bad.message.contains("40962 bytes"), "{}", bad.message);

        let bad = invalid(&csv_row(&[(Field::Organization, "A"), (Field::Key, "k"), (Field::Value, "gold")]));
        assert_eq!(bad.field.as_deref(), Some("value"));
        assert!(bad.message.contains("invalid JSON"), "{}", bad.message);
        assert!(bad.message.contains(r#""gold""#), "{}", bad.message);

        let bad = invalid(&csv_row(&[(Field::Organization, "A"), (Field::Key, "k"), (Field::Value, "")]));
        assert_eq!(bad.field.as_deref(), Some("value"));

        // delete may leave the value out; compact size counts, not the text's
        let row = validate(
            &csv_row(&[(Field::Organization, "A"), (Field::Key, "k"), (Field::Action, "delete")]),
            0,
            source(),
        )
        .unwrap();
        assert_eq!(row.action, Action::Delete);
        assert!(matches!(row.data, RowData::Property { value: Value::Null, .. }));
        let spaced = format!("[{}1]", " ".repeat(40 * 1024));
        let row =
            validate(&csv_row(&[(Field::Organization, "A"), (Field::Key, "k"), (Field::Value, &spaced)]), 0, source())
                .unwrap();
        assert!(matches!(row.data, RowData::Property { ref value, .. } if *value == json!([1])));
    }

    #[test]
    fn jsonl_values_are_values() {
        let obj = json!({"tier": "gold"});
        let null = Value::Null;
        let mut raw = RawRow::new(false);
        raw.set(Field::Organization, Raw::Text("A"));
        raw.set(Field::Key, Raw::Text("k"));
        raw.set(Field::Value, Raw::Json(&obj));
        let RowData::Property { value, .. } = validate(&raw, 0, source()).unwrap().data else { panic!() };
        assert_eq!(value, obj);
        raw.set(Field::Value, Raw::Text("plain"));
        let RowData::Property { value, .. } = validate(&raw, 0, source()).unwrap().data else { panic!() };
        assert_eq!(value, json!("plain"));
        // an explicit null is a value (a snapshot may hold one)
        raw.set(Field::Value, Raw::Json(&null));
        let RowData::Property { value, .. } = validate(&raw, 0, source()).unwrap().data else { panic!() };
        assert_eq!(value, Value::Null);
        raw.set(Field::Value, Raw::Absent);
        assert_eq!(invalid(&raw).field.as_deref(), Some("value"));
    }

    #[test]
    fn service_desk_ids() {
        for ok in ["1", "42", "HELP", "it_SD2"] {
            let raw = csv_row(&[(Field::Organization, "A"), (Field::ServiceDeskId, ok)]);
            assert!(validate(&raw, 0, source()).is_ok(), "{ok}");
        }
        for bad in ["1 2", "a/b", "-1", "_X"] {
            let raw = csv_row(&[(Field::Organization, "A"), (Field::ServiceDeskId, bad)]);
            assert_eq!(invalid(&raw).field.as_deref(), Some("service_desk_id"), "{bad}");
        }
        let n = json!(5);
        let mut raw = RawRow::new(false);
        raw.set(Field::Organization, Raw::Text("A"));
        raw.set(Field::ServiceDeskId, Raw::Json(&n));
        let row = validate(&raw, 0, source()).unwrap();
        assert_eq!(row.action, Action::Link);
        assert!(matches!(row.data, RowData::ServiceDesk { ref service_desk_id, .. } if service_desk_id == "5"));
    }

    #[test]
    fn mixed_and_kindless_rows() {
        let mixed = invalid(&csv_row(&[(Field::Organization, "A"), (Field::AccountId, "x"), (Field::Key, "k")]));
        assert_eq!(mixed.kind, None);
        assert_eq!(mixed.field, None);
        assert!(mixed.message.starts_with("in.csv:7: mixed kinds"), "{}", mixed.message);
        assert_eq!(mixed.organization.as_deref(), Some("A"));

        let n = json!(1);
        let mut raw = RawRow::new(false);
        raw.set(Field::Name, Raw::Json(&n));
        let not_string = invalid(&raw);
        assert_eq!(not_string.field.as_deref(), Some("name"));
        assert!(not_string.message.contains("must be a string"));

        let reader_problem = RawRow {
            problem: Some(Problem::field(Field::Email, "not valid UTF-8")),
            ..csv_row(&[(Field::Organization, "A"), (Field::AccountId, "x")])
        };
        let bad = invalid(&reader_problem);
        assert_eq!(bad.kind, Some(Kind::Members));
        assert_eq!(bad.field.as_deref(), Some("email"));
        assert_eq!(bad.target.as_deref(), Some("x"));
        assert_eq!(bad.index, 3);
    }
}
