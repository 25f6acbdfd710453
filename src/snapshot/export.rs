//! `export`: a complete, deterministic, atomic snapshot of a site.
//!
//! Owns the export verb end to end: check `--out`, read the site through the
//! [`pipeline`](super::pipeline), hand the sorted records to
//! [`write`](super::write) (staging directory, formats, manifest, atomic
//! rename), and sum up. It must not speak HTTP itself (every read goes
//! through the typed [`Client`] and its throttle) nor write snapshot bytes
//! itself, so that a failed read can never leave a snapshot that looks whole.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::pipeline::{read_site, DeskInfo, SiteData};
use super::retention;
use super::write::{self, FileEntry, ManifestInfo, Staging};
use super::Format;
use crate::api::{ApiError, Client};
use crate::model::{DeskLinkRecord, MemberRecord, OrgRecord, PropertyRecord, DATA_FILES};

/// What to export and where.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The snapshot directory to create.
    pub out: PathBuf,
    pub format: Format,
    /// Desks whose links to export; empty = every desk from `GET /servicedesk`.
    pub service_desks: Vec<String>,
    /// Replace an existing `out` (only an empty directory or a snapshot).
    pub overwrite: bool,
    /// Site URL written to the manifest (credentials are stripped anyway).
    pub site: String,
    /// Show a progress bar on stderr.
    pub progress: bool,
    /// CSV files start with a UTF-8 byte order mark (`--excel`).
    pub excel: bool,
    /// Keep this many snapshots beside `out` (this one included): older
    /// ones this tool wrote are removed after the export (`--keep`).
    pub keep: Option<usize>,
}

/// The outcome of a successful export.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSummary {
    pub organizations: u64,
    pub members: u64,
    pub properties: u64,
    pub service_desk_links: u64,
    /// Organizations that answered 404 mid-read (deleted while the export
    /// ran): left out of every file.
    pub vanished_organizations: Vec<u64>,
    pub requests: u64,
    pub retries: u64,
    pub rate_limited: u64,
    /// The endpoint whose requests needed the most time at its rate.
    pub busiest: Option<crate::throttle::EndpointLoad>,
    pub elapsed: Duration,
    pub out: PathBuf,
    /// Older snapshots removed by `--keep`.
    pub removed_snapshots: Vec<PathBuf>,
}

impl fmt::Display for ExportSummary {
    /// Every line ends with a newline, like the import summary.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "export complete: {}", self.out.display())?;
        use crate::report::plural;
        writeln!(
            f,
            "  {}, {}, {}, {}",
            plural(self.organizations, "organization", "organizations"),
            plural(self.members, "member", "members"),
            plural(self.properties, "property", "properties"),
            plural(self.service_desk_links, "service desk link", "service desk links")
        )?;
        writeln!(f, "  {}", crate::report::traffic(self.requests, self.retries, self.rate_limited, self.elapsed))?;
        if let Some(b) = &self.busiest {
            writeln!(f, "  {}", b.describe(self.elapsed))?;
        }
        for old in &self.removed_snapshots {
            writeln!(f, "  removed the older snapshot {} (--keep)", old.display())?;
        }
        if !self.vanished_organizations.is_empty() {
            let ids: Vec<String> = self.vanished_organizations.iter().map(u64::to_string).collect();
            writeln!(
                f,
                "  warning: {} organization(s) were deleted while the export ran and are not in the snapshot: {}",
                ids.len(),
                ids.join(", ")
            )?;
        }
        Ok(())
    }
}

/// Why an export failed. No snapshot was installed in any case.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("{} already exists: choose another --out, or replace it with --overwrite", .0.display())]
    OutExists(PathBuf),
    #[error("cannot use {} as --out: {}", .0.display(), .1)]
    BadOut(PathBuf, &'static str),
    #[error("reading the site failed: {}", api_message(.0))]
    Api(ApiError),
    #[error("service desk {0:?} does not exist on the site (404)")]
    UnknownServiceDesk(String),
    #[error("{0} kept changing while it was read ({1} re-reads): try again when the site is quieter")]
    Unstable(String, u32),
    /// The site's paging does not advance (names the endpoint).
    #[error("{0}: nothing was written")]
    Paging(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// The error, then what to fix when it is a credential or permission one.
fn api_message(e: &ApiError) -> String {
    match e.fatal_hint() {
        Some(hint) => format!("{e}; {hint}"),
        None => e.to_string(),
    }
}

/// Export the site behind `client` into `opts.out`.
pub async fn export(client: &Client, opts: &ExportOptions) -> Result<ExportSummary, ExportError> {
    let started = Instant::now();
    let started_at = now_rfc3339();
    let before = client.throttle().snapshot();
    let routes_before = client.throttle().route_counts();
    let staging = Staging::prepare(&opts.out, opts.overwrite)?;

    let site = read_site(client, opts).await?;

    let counts = Counts {
        organizations: site.orgs.len() as u64,
        members: site.orgs.iter().map(|o| o.members.len() as u64).sum(),
        properties: site.orgs.iter().map(|o| o.properties.len() as u64).sum(),
        service_desk_links: site.links.len() as u64,
    };
    let vanished = site.vanished.clone();
    let info = ManifestInfo {
        site: manifest_site(&opts.site),
        started_at,
        finished_at: String::new(),
        format: opts.format,
        service_desks: site.desks.clone(),
    };
    let format = opts.format;
    let bom = opts.excel && format == Format::Csv;
    // If this future is dropped (Ctrl-C) while the writer runs, the writer
    // must not install the snapshot afterwards: the caller has given up.
    let abandoned = Arc::new(AtomicBool::new(false));
    let _abandon_on_drop = AbandonOnDrop(abandoned.clone());
    tokio::task::spawn_blocking(move || -> Result<(), ExportError> {
        let files = write_files(staging.path(), format, bom, site)?;
        let info = ManifestInfo { finished_at: now_rfc3339(), ..info };
        if abandoned.load(AtomicOrdering::SeqCst) {
            return Err(ExportError::Io(
                "export interrupted before the snapshot was installed".into(),
                std::io::ErrorKind::Interrupted.into(),
            ));
        }
        staging.install(&write::manifest(&info, &files))
    })
    .await
    .map_err(|e| ExportError::Io("the snapshot writer stopped".into(), std::io::Error::other(e.to_string())))??;

    let removed = match opts.keep {
        Some(keep) => retention::keep_newest(&opts.out, keep),
        None => Vec::new(),
    };
    let counted = client.throttle().snapshot().since(&before);
    Ok(ExportSummary {
        removed_snapshots: removed,
        organizations: counts.organizations,
        members: counts.members,
        properties: counts.properties,
        service_desk_links: counts.service_desk_links,
        vanished_organizations: vanished,
        requests: counted.requests,
        retries: counted.retries,
        rate_limited: counted.rate_limited,
        busiest: client.throttle().busiest_since(&routes_before),
        elapsed: started.elapsed(),
        out: opts.out.clone(),
    })
}

/// Sets its flag when dropped: on every exit of `export`, including the
/// future being dropped mid-await.
struct AbandonOnDrop(Arc<AtomicBool>);

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        self.0.store(true, AtomicOrdering::SeqCst);
    }
}

struct Counts {
    organizations: u64,
    members: u64,
    properties: u64,
    service_desk_links: u64,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The site URL for the manifest, without any user:password in it.
fn manifest_site(site: &str) -> String {
    match url::Url::parse(site) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.to_string()
        }
        _ => site.to_string(),
    }
}

/// Write the four data files; entries come back in `DATA_FILES` order.
/// Rows move out of `site` (only the organization name is copied per row).
fn write_files(dir: &Path, format: Format, bom: bool, site: SiteData) -> Result<Vec<FileEntry>, ExportError> {
    let SiteData { mut orgs, links, desk_info, .. } = site;
    let mut files = Vec::with_capacity(DATA_FILES.len());
    files.push(write::write_data_file(
        dir,
        "members",
        format,
        bom,
        orgs.iter_mut().flat_map(|o| {
            let org = &o.org;
            std::mem::take(&mut o.members).into_iter().map(move |u| MemberRecord {
                organization: org.name.clone(),
                organization_id: org.id,
                account_id: u.account_id,
                email: u.email_address,
                display_name: u.display_name,
            })
        }),
    )?);
    files.push(write::write_data_file(
        dir,
        "properties",
        format,
        bom,
        orgs.iter_mut().flat_map(|o| {
            let org = &o.org;
            std::mem::take(&mut o.properties).into_iter().map(move |(key, value)| PropertyRecord {
                organization: org.name.clone(),
                organization_id: org.id,
                key,
                value,
            })
        }),
    )?);
    files.push(write::write_data_file(
        dir,
        "service_desks",
        format,
        bom,
        links.into_iter().map(|(i, desk)| {
            let (id, info) = desk_with_info(desk, &desk_info);
            DeskLinkRecord {
                organization: orgs[i].org.name.clone(),
                organization_id: orgs[i].org.id,
                service_desk_id: id,
                project_key: info.project_key,
                project_name: info.project_name,
            }
        }),
    )?);
    files.push(write::write_data_file(
        dir,
        "organizations",
        format,
        bom,
        orgs.into_iter().map(|o| OrgRecord {
            id: o.org.id,
            name: o.org.name,
            uuid: o.org.uuid,
            scim_managed: o.org.scim_managed,
            created: o.org.created,
        }),
    )?);
    files.sort_by_key(|f| DATA_FILES.iter().position(|kind| f.name.split('.').next() == Some(*kind)));
    Ok(files)
}

/// A desk's id with its project key and name from the desk list; a desk
/// named by `--service-desk KEY` is written under its id.
fn desk_with_info(desk: String, info: &HashMap<String, DeskInfo>) -> (String, DeskInfo) {
    if let Some(i) = info.get(&desk) {
        return (desk, i.clone());
    }
    match info.iter().find(|(_, i)| i.project_key.as_deref().is_some_and(|k| k.eq_ignore_ascii_case(&desk))) {
        Some((id, i)) => (id.clone(), i.clone()),
        None => (desk, DeskInfo::default()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_site_never_carries_credentials() {
        assert_eq!(manifest_site("https://acme.atlassian.net"), "https://acme.atlassian.net");
        assert_eq!(manifest_site("https://me:secret@acme.atlassian.net/x"), "https://acme.atlassian.net/x");
        assert!(!manifest_site("http://token@127.0.0.1:9").contains("token"));
        assert_eq!(manifest_site("not a url"), "not a url");
    }

    #[test]
    fn exit_codes_separate_usage_from_aborts() {
        let io = || std::io::Error::other("disk full");
        assert_eq!(ExportError::OutExists("x".into()).exit().code(), 2);
        assert_eq!(ExportError::BadOut("x".into(), "why").exit().code(), 2);
        assert_eq!(ExportError::Io("write".into(), io()).exit().code(), 3);
        assert_eq!(ExportError::UnknownServiceDesk("9".into()).exit().code(), 3);
        assert_eq!(ExportError::Unstable("the list".into(), 9).exit().code(), 3);
        let api = ApiError {
            kind: crate::api::ErrorKind::Status { status: 401, message: String::new(), retry_after: None },
            attempts: 1,
        };
        let err = ExportError::Api(api);
        assert_eq!(err.exit().code(), 3);
        assert!(err.to_string().contains("HTTP 401") && err.to_string().contains("JSM_API_TOKEN"), "{err}");
    }
}
