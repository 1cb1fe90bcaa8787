//! `airlock export` / `airlock import`: all state as JSON Lines, to move from
//! the SQLite demo to PostgreSQL (or back) with the audit chain intact. The
//! chain is copied verbatim, hashes included, and verified after import.
//!
//! Format: a header line, then one line per request, per audit event and
//! per access-review campaign (with its items):
//! `{"header":{"format":"airlock-export","version":1,"schema":N}}`,
//! `{"request":{…}}`, `{"audit":{…}}`, `{"access_review":{…}}`.

use std::io::{BufRead, Write};

use airlock_core::audit::AuditRecord;
use serde::{Deserialize, Serialize};

use super::access_reviews::CampaignRecord;
use super::record::{AuditRow, RequestRecord};
use super::{ChainReport, ImportReport, Store, StoreError};

const FORMAT: &str = "airlock-export";
const VERSION: u32 = 1;
const PAGE: u32 = 1000;

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum Line {
    Header {
        format: String,
        version: u32,
        schema: i64,
    },
    Request(Box<RequestRecord>),
    Audit(Box<AuditRow>),
    /// An access-review campaign with its items (schema 13 on).
    AccessReview(Box<CampaignRecord>),
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the imported audit chain does not verify: {0}")]
    Chain(String),
}

/// What an export wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportReport {
    pub requests: usize,
    pub audit_events: usize,
    pub access_reviews: usize,
}

fn write_line(out: &mut dyn Write, line: &Line) -> Result<(), TransferError> {
    serde_json::to_writer(&mut *out, line).map_err(std::io::Error::other)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes every request and audit event, page by page.
pub async fn export(
    store: &dyn Store,
    schema: i64,
    out: &mut dyn Write,
) -> Result<ExportReport, TransferError> {
    write_line(
        out,
        &Line::Header {
            format: FORMAT.to_owned(),
            version: VERSION,
            schema,
        },
    )?;
    let mut report = ExportReport {
        requests: 0,
        audit_events: 0,
        access_reviews: 0,
    };
    let mut after: Option<String> = None;
    loop {
        let page = store.export_requests(after.as_deref(), PAGE).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.id.clone());
        report.requests += page.len();
        for record in page {
            write_line(out, &Line::Request(Box::new(record)))?;
        }
    }
    let mut after_seq = 0;
    loop {
        let page = store.export_audit(after_seq, PAGE).await?;
        let Some(last) = page.last() else { break };
        after_seq = last.seq;
        report.audit_events += page.len();
        for record in &page {
            write_line(out, &Line::Audit(Box::new(AuditRow::from(record))))?;
        }
    }
    for campaign in store.access_reviews(false, u32::MAX).await? {
        let items = store.access_review_items(&campaign.id).await?;
        report.access_reviews += 1;
        write_line(
            out,
            &Line::AccessReview(Box::new(CampaignRecord::of(&campaign, &items)?)),
        )?;
    }
    out.flush()?;
    Ok(report)
}

/// Reads an export into an empty store, then verifies the audit chain.
pub async fn import(
    store: &dyn Store,
    schema: i64,
    input: &mut dyn BufRead,
) -> Result<(ImportReport, ChainReport), TransferError> {
    let mut requests = Vec::new();
    let mut audit: Vec<AuditRecord> = Vec::new();
    let mut access_reviews = Vec::new();
    let mut saw_header = false;
    for (n, line) in input.lines().enumerate() {
        let line_no = n + 1;
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |message: String| TransferError::Line {
            line: line_no,
            message,
        };
        let parsed: Line = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        match parsed {
            Line::Header {
                format,
                version,
                schema: from,
            } => {
                if line_no != 1 || format != FORMAT || version != VERSION {
                    return Err(bad(format!(
                        "expected the `{FORMAT}` version {VERSION} header on the first line"
                    )));
                }
                if from > schema {
                    return Err(bad(format!(
                        "exported from schema {from}, newer than this airlock's {schema}"
                    )));
                }
                saw_header = true;
            }
            _ if !saw_header => return Err(bad(format!("missing the `{FORMAT}` header"))),
            Line::Request(record) => {
                // Parse now so a bad record is reported with its line.
                record
                    .as_ref()
                    .clone()
                    .into_request()
                    .map_err(|e| bad(e.to_string()))?;
                requests.push(*record);
            }
            Line::Audit(row) => audit.push(AuditRecord::from(*row)),
            Line::AccessReview(record) => {
                record.parse().map_err(|e| bad(e.to_string()))?;
                access_reviews.push(*record);
            }
        }
    }
    if !saw_header {
        return Err(TransferError::Line {
            line: 1,
            message: format!("empty input: no `{FORMAT}` header"),
        });
    }
    let imported = store.import(requests, audit, access_reviews).await?;
    let chain = store.verify_audit().await?;
    if let Some(b) = &chain.first_break {
        return Err(TransferError::Chain(b.to_string()));
    }
    Ok((imported, chain))
}
