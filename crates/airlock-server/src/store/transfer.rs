//! `airlock export` / `airlock import`: all state as JSON Lines, to move from
//! the SQLite demo to PostgreSQL (or back) with the audit chain intact. The
//! chain is copied verbatim, hashes included, and verified as it is read:
//! an import commits only a chain that checks out. Both directions stream,
//! a page or a batch at a time, so memory does not grow with the database.
//!
//! Format: a header line, then one line per request, per audit event and
//! per access-review campaign (with its items):
//! `{"header":{"format":"airlock-export","version":1,"schema":N}}`,
//! `{"request":{…}}`, `{"audit":{…}}`, `{"access_review":{…}}`.

use std::io::{BufRead, Write};

use airlock_core::audit::{AuditRecord, ChainVerifier};
use serde::{Deserialize, Serialize};

use super::access_reviews::CampaignRecord;
use super::record::{AuditRow, RequestRecord};
use super::{ChainReport, Import, ImportBatch, ImportReport, Store, StoreError};

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

/// Lines of one kind handed to the store at a time: what memory an import
/// holds is about this many lines, whatever the export's size.
const BATCH: usize = 1000;

/// Reads an export into an empty store, streaming: lines are parsed and
/// handed to the store in batches of [`BATCH`] inside one transaction
/// ([`Store::begin_import`]), and the audit chain is verified as its events
/// go by, from its first event, by `chain` (`ChainVerifier::default()`, or
/// one holding the checkpoints the chain must match). Nothing is committed
/// unless every line parsed and the whole chain checked out; otherwise the
/// store is left empty, as it was, and the error names the line.
pub async fn import(
    store: &dyn Store,
    schema: i64,
    input: &mut dyn BufRead,
    chain: ChainVerifier,
) -> Result<(ImportReport, ChainReport), TransferError> {
    import_in_batches(store, schema, input, chain, BATCH).await
}

/// [`import`] with `batch` lines of a kind per batch (tests use few, to
/// fail an import after some batches went in).
pub async fn import_in_batches(
    store: &dyn Store,
    schema: i64,
    input: &mut dyn BufRead,
    chain: ChainVerifier,
    batch: usize,
) -> Result<(ImportReport, ChainReport), TransferError> {
    let mut import = store.begin_import().await?;
    match import_lines(&mut import, schema, input, chain, batch.max(1)).await {
        Ok(chain) => {
            let imported = import.finish().await?;
            Ok((imported, chain))
        }
        Err(e) => {
            import.abort().await;
            Err(e)
        }
    }
}

/// Feeds `import` every line of `input`; the verified chain.
async fn import_lines(
    import: &mut Import,
    schema: i64,
    input: &mut dyn BufRead,
    mut chain: ChainVerifier,
    size: usize,
) -> Result<ChainReport, TransferError> {
    let mut requests = Vec::with_capacity(size);
    let mut audit: Vec<AuditRecord> = Vec::with_capacity(size);
    let mut access_reviews = Vec::new();
    let mut saw_header = false;
    let mut line = String::new();
    let mut line_no = 0;
    loop {
        line.clear();
        if input.read_line(&mut line)? == 0 {
            break;
        }
        line_no += 1;
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
                requests.push((*record).into_request().map_err(|e| bad(e.to_string()))?);
                if requests.len() >= size {
                    let batch = std::mem::replace(&mut requests, Vec::with_capacity(size));
                    import.load(ImportBatch::Requests(batch)).await?;
                }
            }
            Line::Audit(row) => {
                let record = AuditRecord::from(*row);
                chain
                    .check(&record)
                    .map_err(|b| bad(format!("the audit chain does not verify: {b}")))?;
                audit.push(record);
                if audit.len() >= size {
                    let batch = std::mem::replace(&mut audit, Vec::with_capacity(size));
                    import.load(ImportBatch::Audit(batch)).await?;
                }
            }
            Line::AccessReview(record) => {
                record.parse().map_err(|e| bad(e.to_string()))?;
                access_reviews.push(*record);
                if access_reviews.len() >= size {
                    let batch = std::mem::take(&mut access_reviews);
                    import.load(ImportBatch::AccessReviews(batch)).await?;
                }
            }
        }
    }
    if !saw_header {
        return Err(TransferError::Line {
            line: 1,
            message: format!("empty input: no `{FORMAT}` header"),
        });
    }
    for batch in [
        ImportBatch::Requests(requests),
        ImportBatch::Audit(audit),
        ImportBatch::AccessReviews(access_reviews),
    ] {
        import.load(batch).await?;
    }
    let chain = chain.finish();
    if let Some(b) = &chain.first_break {
        return Err(TransferError::Chain(b.to_string()));
    }
    Ok(chain)
}
