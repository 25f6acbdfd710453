//! The column vocabulary of import files: which columns (CSV) or keys (JSONL)
//! exist, which kind of row each belongs to, and how a row's kind follows
//! from the columns it fills.
//!
//! It owns only names and the classification rule, so that the CSV and JSONL
//! readers agree on them and the validator never sees a header or a JSON key;
//! it must not read files or judge values (that is `validate`), because the
//! same rule serves the up-front header check and every row.

use super::Kind;

/// A column this tool understands. Anything else is an unknown column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) enum Field {
    Name,
    Organization,
    OrganizationId,
    AccountId,
    Key,
    Value,
    ServiceDeskId,
    Action,
    Id,
    Uuid,
    ScimManaged,
    Created,
    Email,
    DisplayName,
    ProjectKey,
    ProjectName,
}

impl Field {
    pub(super) const COUNT: usize = 16;
    pub(super) const ALL: [Field; Field::COUNT] = [
        Field::Name,
        Field::Organization,
        Field::OrganizationId,
        Field::AccountId,
        Field::Key,
        Field::Value,
        Field::ServiceDeskId,
        Field::Action,
        Field::Id,
        Field::Uuid,
        Field::ScimManaged,
        Field::Created,
        Field::Email,
        Field::DisplayName,
        Field::ProjectKey,
        Field::ProjectName,
    ];

    /// The column name as it appears in headers, JSON keys and messages.
    pub(super) fn name(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Organization => "organization",
            Field::OrganizationId => "organization_id",
            Field::AccountId => "account_id",
            Field::Key => "key",
            Field::Value => "value",
            Field::ServiceDeskId => "service_desk_id",
            Field::Action => "action",
            Field::Id => "id",
            Field::Uuid => "uuid",
            Field::ScimManaged => "scim_managed",
            Field::Created => "created",
            Field::Email => "email",
            Field::DisplayName => "display_name",
            Field::ProjectKey => "project_key",
            Field::ProjectName => "project_name",
        }
    }

    /// The field a header name or JSON key denotes. Names are compared
    /// case-insensitively with spaces, `-` and `_` alike (after trimming and
    /// dropping a BOM), and a few spreadsheet spellings are aliases:
    /// `email address` and `e-mail` for `email`, `full name` and
    /// `display name` for `display_name`.
    pub(super) fn from_name(raw: &str) -> Option<Field> {
        let name = normalize(raw);
        if let Some(&(_, field)) = ALIASES.iter().find(|(alias, _)| *alias == name) {
            return Some(field);
        }
        Field::ALL.into_iter().find(|f| f.name() == name)
    }

    /// The known column that an unknown name is one typo away from (one
    /// character inserted, deleted, replaced, or two neighbours swapped).
    pub(super) fn suggest(raw: &str) -> Option<Field> {
        let name = normalize(raw);
        if name.chars().count() < 3 || Field::from_name(raw).is_some() {
            return None;
        }
        let aliases = ALIASES.iter().copied();
        Field::ALL
            .into_iter()
            .map(|f| (f.name(), f))
            .chain(aliases)
            .find(|(known, _)| one_typo(&name, known))
            .map(|(_, f)| f)
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Other spellings of column names (after [`normalize`]).
const ALIASES: [(&str, Field); 4] = [
    ("email_address", Field::Email),
    ("e_mail", Field::Email),
    ("e_mail_address", Field::Email),
    ("full_name", Field::DisplayName),
];

/// A header name as it is compared: trimmed, BOM dropped, lowercase, with
/// runs of spaces, `-` and `_` as one `_`.
pub(super) fn normalize(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut gap = false;
    for c in raw.trim_start_matches('\u{feff}').trim().chars() {
        if c == ' ' || c == '-' || c == '_' {
            gap = true;
            continue;
        }
        if gap && !out.is_empty() {
            out.push('_');
        }
        gap = false;
        out.extend(c.to_lowercase());
    }
    out
}

/// Whether `a` becomes `b` by one insertion, deletion, replacement or swap
/// of two neighbouring characters (but is not `b`).
fn one_typo(a: &str, b: &str) -> bool {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    if a == b {
        return false;
    }
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let (ra, rb) = (&a[prefix..], &b[prefix..]);
    match ra.len().cmp(&rb.len()) {
        std::cmp::Ordering::Equal => {
            ra[1..] == rb[1..] || (ra.len() >= 2 && ra[0] == rb[1] && ra[1] == rb[0] && ra[2..] == rb[2..])
        }
        std::cmp::Ordering::Less => rb.len() == ra.len() + 1 && ra == &rb[1..],
        std::cmp::Ordering::Greater => ra.len() == rb.len() + 1 && &ra[1..] == rb,
    }
}

/// The fields whose non-empty value decides a row's kind, with that kind.
/// `name` is not among them: it marks an organization only when none of
/// these is filled. `email` marks a member only beside an organization
/// column (an organizations file may carry a contact email).
pub(super) const DISTINGUISHING: [(Field, Kind); 4] = [
    (Field::AccountId, Kind::Members),
    (Field::Email, Kind::Members),
    (Field::Key, Kind::Properties),
    (Field::ServiceDeskId, Kind::ServiceDesks),
];

/// Whether a distinguishing field marks its kind, given whether the row (or
/// header) names an organization.
fn marks(field: Field, refers: bool) -> bool {
    field != Field::Email || refers
}

/// Every column a row of `kind` may carry (writes use some, snapshot
/// bookkeeping columns such as `uuid` or `email` are read and ignored).
pub(super) fn columns(kind: Kind) -> &'static [Field] {
    match kind {
        Kind::Organizations => {
            &[Field::Name, Field::Action, Field::Id, Field::Uuid, Field::ScimManaged, Field::Created]
        }
        Kind::Members => &[
            Field::Organization,
            Field::OrganizationId,
            Field::AccountId,
            Field::Action,
            Field::Email,
            Field::DisplayName,
        ],
        Kind::Properties => &[Field::Organization, Field::OrganizationId, Field::Key, Field::Value, Field::Action],
        Kind::ServiceDesks => &[
            Field::Organization,
            Field::OrganizationId,
            Field::ServiceDeskId,
            Field::ProjectKey,
            Field::ProjectName,
            Field::Action,
        ],
    }
}

/// Columns a file (or JSONL row) of `kind` must have. The organization is
/// named by `organization` or `organization_id`; it is listed here as
/// `organization`. A member is named by `account_id` or `email`; it is
/// listed here as `account_id`.
pub(super) fn required(kind: Kind) -> &'static [Field] {
    match kind {
        Kind::Organizations => &[Field::Name],
        Kind::Members => &[Field::Organization, Field::AccountId],
        Kind::Properties => &[Field::Organization, Field::Key, Field::Value],
        Kind::ServiceDesks => &[Field::Organization, Field::ServiceDeskId],
    }
}

/// The fields a report shows as `target` for rows of `kind`, the first
/// filled one winning.
pub(super) fn target(kind: Kind) -> impl Iterator<Item = Field> {
    DISTINGUISHING.into_iter().filter(move |&(_, k)| k == kind).map(|(f, _)| f)
}

/// Fields that some kind requires, or that decide a kind: an unknown
/// column one typo away from one of these is an error, not a warning.
pub(super) fn is_required_anywhere(field: Field) -> bool {
    DISTINGUISHING.iter().any(|&(f, _)| f == field)
        || matches!(field, Field::Name | Field::Organization | Field::OrganizationId | Field::Value)
}

/// A set of fields (a header, or the keys of one JSON object).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct FieldSet(u16);

impl FieldSet {
    pub(super) fn insert(&mut self, field: Field) {
        self.0 |= 1 << field.index();
    }

    pub(super) fn contains(self, field: Field) -> bool {
        self.0 & (1 << field.index()) != 0
    }

    /// The kinds of row that these columns can express: one per
    /// distinguishing column, and organizations when `name` is there.
    pub(super) fn kinds(self) -> Vec<Kind> {
        let refers = self.contains(Field::Organization) || self.contains(Field::OrganizationId);
        let mut kinds: Vec<Kind> = Vec::new();
        for (f, k) in DISTINGUISHING {
            if self.contains(f) && marks(f, refers) && !kinds.contains(&k) {
                kinds.push(k);
            }
        }
        if self.contains(Field::Name) {
            kinds.insert(0, Kind::Organizations);
        }
        kinds
    }

    /// Members of the set that none of its kinds uses (ignored columns).
    /// Empty when the set forms no kind at all.
    pub(super) fn unused(self) -> Vec<Field> {
        let kinds = self.kinds();
        if kinds.is_empty() {
            return Vec::new();
        }
        Field::ALL
            .into_iter()
            .filter(|&f| self.contains(f) && !kinds.iter().any(|&k| columns(k).contains(&f)))
            .collect()
    }

    /// The first column of `kind`'s required ones that the set lacks.
    pub(super) fn missing_for(self, kind: Kind) -> Option<Field> {
        required(kind).iter().copied().find(|&f| match f {
            Field::Organization => !self.contains(Field::Organization) && !self.contains(Field::OrganizationId),
            Field::AccountId => !self.contains(Field::AccountId) && !self.contains(Field::Email),
            _ => !self.contains(f),
        })
    }
}

/// How full a row's cell is, as far as kind detection cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fill {
    /// No such column / key (or JSON `null`).
    Absent,
    /// The column exists but the cell is empty.
    Empty,
    /// A value is there.
    Filled,
}

/// Why a row has no kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum NoKind {
    /// Several distinguishing fields are filled.
    Mixed(Vec<Field>),
    /// Nothing marks the row as any kind.
    Unknown,
}

/// The kind of one row, from how full each field is.
///
/// The kind whose distinguishing field is filled wins; several filled is a
/// mixed row. With none filled, a row whose only distinguishing column is
/// present (but empty) is of that kind, so that validation can say which
/// field is missing. A row is an organization only when it has `name` and no
/// distinguishing or `organization`/`organization_id` column at all: a
/// members export that also carries a person's `name` must never turn a row
/// with a blank `account_id` into a new organization.
pub(super) fn classify(fill: impl Fn(Field) -> Fill) -> Result<Kind, NoKind> {
    let refers = fill(Field::Organization) != Fill::Absent || fill(Field::OrganizationId) != Fill::Absent;
    let filled: Vec<(Field, Kind)> =
        DISTINGUISHING.into_iter().filter(|&(f, _)| marks(f, refers) && fill(f) == Fill::Filled).collect();
    match filled.as_slice() {
        [] => {}
        [(_, kind), rest @ ..] if rest.iter().all(|(_, k)| k == kind) => return Ok(*kind),
        _ => return Err(NoKind::Mixed(filled.iter().map(|&(f, _)| f).collect())),
    }
    let mut present: Vec<Kind> = DISTINGUISHING
        .into_iter()
        .filter(|&(f, _)| marks(f, refers) && fill(f) != Fill::Absent)
        .map(|(_, k)| k)
        .collect();
    present.dedup();
    match (present.as_slice(), fill(Field::Name)) {
        ([kind], _) => Ok(*kind),
        ([], Fill::Filled | Fill::Empty) if !refers => Ok(Kind::Organizations),
        _ => Err(NoKind::Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(fields: &[Field]) -> FieldSet {
        let mut s = FieldSet::default();
        for &f in fields {
            s.insert(f);
        }
        s
    }

    #[test]
    fn names_round_trip_and_normalize() {
        for f in Field::ALL {
            assert_eq!(Field::from_name(f.name()), Some(f));
            assert_eq!(f.index(), Field::ALL.iter().position(|&g| g == f).unwrap());
        }
        assert_eq!(Field::from_name("\u{feff} Account_ID "), Some(Field::AccountId));
        assert_eq!(Field::from_name("nickname"), None);
        for (name, field) in [
            ("Account ID", Field::AccountId),
            ("account-id", Field::AccountId),
            ("Service Desk  Id", Field::ServiceDeskId),
            ("Email Address", Field::Email),
            ("E-mail", Field::Email),
            ("e_mail", Field::Email),
            ("Full name", Field::DisplayName),
            ("Display Name", Field::DisplayName),
        ] {
            assert_eq!(Field::from_name(name), Some(field), "{name}");
        }
        assert_eq!(Field::suggest("acount_id"), Some(Field::AccountId));
        assert_eq!(Field::suggest("emial"), Some(Field::Email));
        assert_eq!(Field::suggest("Organisation"), Some(Field::Organization));
        assert_eq!(Field::suggest("fullname"), Some(Field::DisplayName));
        assert_eq!(Field::suggest("email"), None, "a known name is no typo");
        assert_eq!(Field::suggest("colour"), None);
        assert_eq!(Field::suggest("ky"), None, "too short to guess");
    }

    #[test]
    fn header_kinds_and_requirements() {
        let members = set(&[Field::Organization, Field::AccountId, Field::Email]);
        assert_eq!(members.kinds(), vec![Kind::Members]);
        assert_eq!(members.missing_for(Kind::Members), None);
        assert!(members.unused().is_empty());

        let no_org = set(&[Field::AccountId]);
        assert_eq!(no_org.missing_for(Kind::Members), Some(Field::Organization));
        let by_id = set(&[Field::OrganizationId, Field::Key]);
        assert_eq!(by_id.missing_for(Kind::Properties), Some(Field::Value));

        let orgs = set(&[Field::Name, Field::Id, Field::Email]);
        assert_eq!(orgs.kinds(), vec![Kind::Organizations]);
        assert_eq!(orgs.unused(), vec![Field::Email]);
        assert!(set(&[Field::Organization]).kinds().is_empty());
    }

    #[test]
    fn classify_rules() {
        let row = |pairs: &'static [(Field, Fill)]| {
            move |f: Field| pairs.iter().find(|(g, _)| *g == f).map_or(Fill::Absent, |&(_, fill)| fill)
        };
        use Field::*;
        use Fill::*;
        assert_eq!(classify(row(&[(Name, Filled)])), Ok(Kind::Organizations));
        assert_eq!(classify(row(&[(Name, Filled), (AccountId, Filled)])), Ok(Kind::Members));
        // A person's name beside a blank account id is a bad member row, not an organization.
        assert_eq!(classify(row(&[(Name, Filled), (AccountId, Empty)])), Ok(Kind::Members));
        assert_eq!(classify(row(&[(Name, Filled), (Organization, Filled)])), Err(NoKind::Unknown));
        assert_eq!(classify(row(&[(Name, Filled), (Id, Filled)])), Ok(Kind::Organizations));
        assert_eq!(classify(row(&[(AccountId, Empty)])), Ok(Kind::Members));
        assert_eq!(classify(row(&[(Name, Empty)])), Ok(Kind::Organizations));
        assert_eq!(classify(row(&[(AccountId, Filled), (Key, Filled)])), Err(NoKind::Mixed(vec![AccountId, Key])));
        assert_eq!(classify(row(&[(AccountId, Empty), (Key, Empty)])), Err(NoKind::Unknown));
        assert_eq!(classify(row(&[(Organization, Filled)])), Err(NoKind::Unknown));
        // An email names a member beside an organization; both id and email is one member.
        assert_eq!(classify(row(&[(Organization, Filled), (Email, Filled)])), Ok(Kind::Members));
        assert_eq!(classify(row(&[(Organization, Filled), (Email, Filled), (AccountId, Filled)])), Ok(Kind::Members));
        assert_eq!(classify(row(&[(Organization, Filled), (Email, Empty)])), Ok(Kind::Members));
        assert_eq!(classify(row(&[(Name, Filled), (Email, Filled)])), Ok(Kind::Organizations));
        assert_eq!(
            classify(row(&[(OrganizationId, Filled), (Email, Filled), (Key, Filled)])),
            Err(NoKind::Mixed(vec![Email, Key]))
        );
        let crm = set(&[Field::Organization, Field::Email, Field::DisplayName]);
        assert_eq!(crm.kinds(), vec![Kind::Members]);
        assert_eq!(crm.missing_for(Kind::Members), None);
    }
}
