//! `airlock migrate`, `export` and `import`: maintenance on a database
//! directly, without a server.

use std::path::PathBuf;

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
            let (imported, chain) = transfer::import(&store, schema, &mut reader)
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
            Ok(())
        }
    }
}
