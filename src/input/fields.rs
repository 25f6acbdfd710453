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
}

impl Field {
    pub(super) const COUNT: usize = 14;
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
        }
    }

    /// The field a header name or JSON key denotes: names are compared after
    /// trimming, dropping a BOM and lowercasing.
    pub(super) fn from_name(raw: &str) -> Option<Field> {
        let name = raw.trim_start_matches('\u{feff}').trim();
        Field::ALL.into_iter().find(|f| f.name().eq_ignore_ascii_case(name))
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// The fields whose non-empty value decides a row's kind, with that kind.
/// `name` is not among them: it marks an organization only when none of
/// these is filled.
pub(super) const DISTINGUISHING: [(Field, Kind); 3] =
    [(Field::AccountId, Kind::Members), (Field::Key, Kind::Properties), (Field::ServiceDeskId, Kind::ServiceDesks)];

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
        Kind::ServiceDesks => &[Field::Organization, Field::OrganizationId, Field::ServiceDeskId, Field::Action],
    }
}

/// Columns a file (or JSONL row) of `kind` must have. The organization is
/// named by `organization` or `organization_id`; it is listed here as
/// `organization`.
pub(super) fn required(kind: Kind) -> &'static [Field] {
    match kind {
        Kind::Organizations => &[Field::Name],
        Kind::Members => &[Field::Organization, Field::AccountId],
        Kind::Properties => &[Field::Organization, Field::Key, Field::Value],
        Kind::ServiceDesks => &[Field::Organization, Field::ServiceDeskId],
    }
}

/// The field a report shows as `target` for rows of `kind`.
pub(super) fn target(kind: Kind) -> Option<Field> {
    DISTINGUISHING.into_iter().find(|&(_, k)| k == kind).map(|(f, _)| f)
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
        let mut kinds: Vec<Kind> =
            DISTINGUISHING.into_iter().filter(|&(f, _)| self.contains(f)).map(|(_, k)| k).collect();
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
    let filled: Vec<(Field, Kind)> = DISTINGUISHING.into_iter().filter(|&(f, _)| fill(f) == Fill::Filled).collect();
    match filled.as_slice() {
        [(_, kind)] => return Ok(*kind),
        [_, _, ..] => return Err(NoKind::Mixed(filled.iter().map(|&(f, _)| f).collect())),
        [] => {}
    }
    let present: Vec<Kind> =
        DISTINGUISHING.into_iter().filter(|&(f, _)| fill(f) != Fill::Absent).map(|(_, k)| k).collect();
    let refers = fill(Field::Organization) != Fill::Absent || fill(Field::OrganizationId) != Fill::Absent;
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
    }
}
