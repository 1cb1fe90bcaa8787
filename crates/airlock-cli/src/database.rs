//! `airlock migrate`, `export` and `import`: maintenance on a database
//! directly, without a server.

use std::path::PathBuf;

use airlock_core::audit::ChainVerifier;
use airlock_server::checkpoint::OfflineSigner;
use airlock_server::config::Settings;
use airlock_server::engine::{Clock, SystemClock};
use airlock_server::store::transfer;
use anyhow::Context;
use clap::Subcommand;

use crate::args::DatabaseArgs;
use crate::terminal::{say, say_err};

#[derive(Subcommand)]
pub enum DatabaseCmd {
    /// Create or upgrade the database schema and exit.
    Migrate {
        #[command(flatten)]
        db: DatabaseArgs,
    },
    /// Write all requests, the audit log and the access-review campaigns as
    /// JSON Lines (to move databases).
    Export {
        #[command(flatten)]
        db: DatabaseArgs,
        /// Write here instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Load an export into an empty database and verify its audit chain.
    /// With `--config`, the chain is also checked against the server's
    /// checkpoint log and its head signed there, so the server's first
    /// start checks from that head instead of reading the whole chain.
    Import {
        #[command(flatten)]
        db: DatabaseArgs,
        /// Read here instead of standard input.
        #[arg(long)]
        input: Option<PathBuf>,
    },
}

pub async fn run(command: DatabaseCmd) -> anyhow::Result<()> {
    match command {
        DatabaseCmd::Migrate { db } => {
            let (location, store) = db.open().await?;
            say!(
                "{}: schema version {}",
                location.describe(),
                store.schema_version().await?
            );
            Ok(())
        }
        DatabaseCmd::Export { db, output } => {
            let (location, store) = db.open().await?;
            let schema = store.schema_version().await?;
            let mut out: Box<dyn std::io::Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(path)
                        .with_context(|| format!("cannot create `{}`", path.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let report = transfer::export(&store, schema, &mut out).await?;
            say_err!(
                "exported {} requests, {} audit events and {} access reviews from {}",
                report.requests,
                report.audit_events,
                report.access_reviews,
                location.describe()
            );
            Ok(())
        }
        DatabaseCmd::Import { db, input } => {
            let (location, store) = db.open().await?;
            let schema = store.schema_version().await?;
            let mut reader: Box<dyn std::io::BufRead> = match &input {
                Some(path) => Box::new(std::io::BufReader::new(
                    std::fs::File::open(path)
                        .with_context(|| format!("cannot open `{}`", path.display()))?,
                )),
                None => Box::new(std::io::BufReader::new(std::io::stdin().lock())),
            };
            let source = input
                .as_ref()
                .map_or("standard input".to_owned(), |p| p.display().to_string());
            let signer = match &db.config {
                Some(config) => {
                    let audit = Settings::load(config)?.audit;
                    Some(
                        OfflineSigner::open(&audit.checkpoint_key, &audit.checkpoint_log)
                            .with_context(|| {
                                format!("the audit settings of `{}`", config.display())
                            })?,
                    )
                }
                None => None,
            };
            let verifier = match &signer {
                Some(signer) => signer.verifier()?,
                None => ChainVerifier::default(),
            };
            let (imported, chain) = transfer::import(&store, schema, &mut reader, verifier)
                .await
                .with_context(|| format!("importing {source} into {}", location.describe()))?;
            say!(
                "imported {} requests, {} audit events and {} access reviews into {}; audit chain ok ({} events, head {})",
                imported.requests,
                imported.audit_events,
                imported.access_reviews,
                location.describe(),
                chain.checked,
                chain.head_hash
            );
            match signer {
                Some(signer) => {
                    if let Some(signed) = signer.sign_verified(&chain, SystemClock.now())? {
                        say!(
                            "signed audit checkpoint at event {}: the server's first start checks the chain from there",
                            signed.seq
                        );
                    }
                }
                None => say!(
                    "no audit checkpoint signed (no --config): the server's first start checks the whole chain"
                ),
            }
            Ok(())
        }
    }
}
