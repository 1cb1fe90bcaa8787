//! Wires settings into a running server: store, connectors, engine,
//! scheduler and HTTP listener, with a graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use airlock_connectors::command::{CommandConnector, CommandSettings};
use airlock_connectors::mariadb::MariaDbConnector;
use airlock_connectors::postgres::PostgresConnector;
use airlock_connectors::ssh::SshCertificateAuthority;
use airlock_connectors::webhook::{WebhookConnector, WebhookSettings};
use airlock_connectors::Connector;
use airlock_core::policy_change::Trigger;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::checkpoint::{self, CheckpointError, Checkpointer};
use crate::config::{ConnectorSettings, Settings};
use crate::engine::{Clock, Engine, EngineParts, PolicyChange, SystemClock};
use crate::http::{router, AppState};
use crate::policy::{Policies, PolicyLoadError};
use crate::store::sql::SqlStore;
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database `{path}`: {source}")]
    Store { path: String, source: StoreError },
    #[error("connector `{name}`: {message}")]
    Connector { name: String, message: String },
    #[error("policies: {0}")]
    Policy(#[from] PolicyLoadError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot record accepting the broken audit chain: {0}")]
    AcceptBreak(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    checkpointer: Arc<Checkpointer>,
    engine: Arc<Engine>,
}

impl Server {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The public key audit checkpoints are signed with (`ed25519:` hex).
    pub fn checkpoint_key(&self) -> String {
        self.checkpointer.public_key()
    }

    /// Stops accepting requests and stops the scheduler; waits for both,
    /// then signs the final audit head.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
        sign_or_refuse(&self.checkpointer, &self.engine).await;
    }

    /// Runs until the HTTP server or the scheduler stops.
    pub async fn wait(mut self) {
        if let Some(first) = self.tasks.pop() {
            let _ = first.await;
        }
        self.shutdown().await;
    }

    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

pub fn build_connectors(
    settings: &Settings,
) -> Result<HashMap<String, Arc<dyn Connector>>, StartError> {
    let mut connectors: HashMap<String, Arc<dyn Connector>> = HashMap::new();
    for (name, c) in &settings.connectors {
        let connector: Arc<dyn Connector> = match c {
            ConnectorSettings::Command {
                program,
                args,
                env,
                timeout,
            } => Arc::new(CommandConnector::new(CommandSettings {
                program: program.clone(),
                args: args.clone(),
                timeout: *timeout,
                env: env.clone(),
            })),
            ConnectorSettings::Webhook {
                url,
                secret,
                timeout,
            } => Arc::new(
                WebhookConnector::new(WebhookSettings {
                    url: url.clone(),
                    secret: secret.expose().to_vec(),
                    timeout: *timeout,
                })
                .map_err(|e| StartError::Connector {
                    name: name.clone(),
                    message: e.to_string(),
                })?,
            ),
            ConnectorSettings::Postgres(settings) => {
                Arc::new(PostgresConnector::new(settings.clone()).map_err(|e| {
                    StartError::Connector {
                        name: name.clone(),
                        message: e.to_string(),
                    }
                })?)
            }
            ConnectorSettings::MariaDb(settings) => {
                Arc::new(MariaDbConnector::new(settings.clone()).map_err(|e| {
                    StartError::Connector {
                        name: name.clone(),
                        message: e.to_string(),
                    }
                })?)
            }
            // Loads the CA key, creating it (and the KRL sshd reads) on the
            // first start.
            ConnectorSettings::SshCa(settings) => Arc::new(
                SshCertificateAuthority::load_or_generate(settings.clone()).map_err(|e| {
                    StartError::Connector {
                        name: name.clone(),
                        message: e.to_string(),
                    }
                })?,
            ),
        };
        connectors.insert(name.clone(), connector);
    }
    Ok(connectors)
}

/// Reloads the policy set on SIGHUP until shutdown (or proposes it, under
/// the two-person rule). A set that fails to load is logged with every
/// error and audited, and the one in force stays.
async fn reload_on_hangup(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; reload policies through the API");
            return;
        }
    };
    loop {
        let stopping = async {
            // The guard `wait_for` returns is not `Send`: keep it inside.
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let got = tokio::select! {
            () = stopping => return,
            got = hangups.recv() => got,
        };
        if got.is_none() {
            return;
        }
        match engine.change_policies(None, Trigger::Signal).await {
            Ok(PolicyChange::Activated(r)) => tracing::info!(previous = %r.previous,
                version = %r.version, policies = r.policies, "policy set reloaded on SIGHUP"),
            Ok(PolicyChange::Proposed(p)) => tracing::info!(proposal = %p.id,
                version = %p.version, changes = p.changes.len(),
                "policy set proposed on SIGHUP; a second admin must approve it"),
            Err(e) => tracing::error!(error = %e,
                version = %engine.policies().current().version(),
                "policy reload refused; the set in force stays"),
        }
    }
}

/// Signs the audit head if it moved and still chains from the last
/// checkpoint; a chain that does not is never signed, and from then on the
/// engine refuses writes. Nothing is signed while the record is untrusted.
async fn sign_or_refuse(checkpointer: &Checkpointer, engine: &Engine) {
    if engine.check_trusted().is_err() {
        return;
    }
    match checkpointer.checkpoint().await {
        Ok(Ok(Some(c))) => tracing::debug!(seq = c.seq, "audit checkpoint signed"),
        Ok(Ok(None)) => {}
        Ok(Err(broken)) => {
            tracing::error!(problem = %broken, "the audit chain no longer matches the last checkpoint; refusing writes");
            engine.refuse_writes(format!("audit chain broken: {broken}"));
        }
        Err(e) => tracing::error!(error = %e, "cannot write an audit checkpoint"),
    }
}

/// Signs the audit head every `every` until shutdown (the final one is
/// signed by [`Server::shutdown`] once everything else stopped).
async fn run_checkpoints(
    checkpointer: Arc<Checkpointer>,
    engine: Arc<Engine>,
    every: std::time::Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            changed = shutdown.changed() => if changed.is_err() { return },
        }
        if *shutdown.borrow() {
            return;
        }
        sign_or_refuse(&checkpointer, &engine).await;
    }
}

/// Opens the store, starts the scheduler and serves the API on `settings.listen`.
pub async fn start(settings: Settings) -> Result<Server, StartError> {
    start_with_clock(settings, Arc::new(SystemClock)).await
}

pub async fn start_with_clock(
    settings: Settings,
    clock: Arc<dyn Clock>,
) -> Result<Server, StartError> {
    let policies = Arc::new(Policies::load(
        settings.policy_source.clone(),
        settings.directory.clone(),
        settings.policy_two_person,
    )?);
    tracing::info!(version = %policies.current().version(), "policy set loaded");
    let store = SqlStore::open(&settings.database)
        .await
        .map_err(|source| StartError::Store {
            path: settings.database.describe(),
            source,
        })?;
    let store: Arc<dyn Store> = Arc::new(store);
    let key = checkpoint::load_or_generate_key(&settings.audit.checkpoint_key)?;
    let checkpointer = Arc::new(Checkpointer::new(
        Arc::clone(&store),
        key,
        settings.audit.checkpoint_log.clone(),
        Arc::clone(&clock),
    ));
    tracing::info!(public_key = %checkpointer.public_key(),
        log = %settings.audit.checkpoint_log.display(), "audit checkpoints are signed with this key");
    let start_check = checkpointer.check_at_start().await?;
    let connectors = build_connectors(&settings)?;
    let engine = Engine::new(EngineParts {
        store,
        catalog: Arc::new(settings.catalog.clone()),
        policies: Arc::clone(&policies),
        lifecycle: settings.lifecycle.clone(),
        overdue_after: settings.revocation_overdue_after,
        connectors,
        clock,
    });
    if let Some(problem) = &start_check.problem {
        if settings.audit.accept_broken_chain {
            tracing::warn!(%problem, "the audit record is broken; serving anyway as told (--accept-broken-audit-chain), and recording that");
            engine
                .record_accepted_break(problem, start_check.broken_at)
                .await
                .map_err(|e| StartError::AcceptBreak(e.to_string()))?;
            if start_check.report.is_none() {
                // The log itself was unreadable with this key.
                let aside = checkpointer.set_log_aside()?;
                tracing::warn!(kept = %aside.display(), "the checkpoint log was moved aside; a new one starts");
            }
            // Later checkpoints chain from here, so the next start does not
            // stop at the same break again.
            checkpointer.seal_accepted_head().await?;
        } else {
            tracing::error!(%problem, "the audit record cannot be trusted: new requests, approvals, policy changes and reconciliation are refused (revocations continue) until restarted with --accept-broken-audit-chain");
            engine.refuse_writes(problem.clone());
        }
    } else if let Some(report) = &start_check.report {
        tracing::info!(
            checked = report.checked,
            last_checkpoint = ?report.last_checkpoint,
            "audit chain checked from its last checkpoint"
        );
    }
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| StartError::Listen {
            addr: settings.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: settings.listen,
        source,
    })?;
    let (shutdown, watcher) = watch::channel(false);
    let state = AppState {
        engine: Arc::clone(&engine),
        tokens: Arc::new(settings.token_hashes.clone()),
        mfa_header: settings.mfa_header.clone(),
        checkpoint_key: Some(checkpointer.public_key()),
    };
    let health_engine = Arc::clone(&engine);
    tokio::spawn(async move { health_engine.check_connectors().await });
    match engine.recover_lost_attempts().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            count = n,
            "settled connector attempts lost in the last stop"
        ),
        Err(e) => {
            tracing::error!(error = %e, "could not settle the connector attempts lost in the last stop; their leases will")
        }
    }
    let scheduler = tokio::spawn(Arc::clone(&engine).run_scheduler(watcher.clone()));
    if let Err(e) = engine.record_policy_start().await {
        tracing::error!(error = %e, "could not record the policy set in force");
    }
    let reloader = tokio::spawn(reload_on_hangup(Arc::clone(&engine), watcher.clone()));
    let mut tasks = Vec::new();
    match settings.reconcile_every {
        Some(every) => {
            tracing::info!(every = %humantime::format_duration(every), "reconciliation scheduled");
            tasks.push(tokio::spawn(
                Arc::clone(&engine).run_reconciler(every, watcher.clone()),
            ));
        }
        None => tracing::info!("scheduled reconciliation is off (server.reconcile_every)"),
    }
    tasks.push(tokio::spawn(run_checkpoints(
        Arc::clone(&checkpointer),
        Arc::clone(&engine),
        settings.audit.checkpoint_every,
        watcher.clone(),
    )));
    let mut http_watcher = watcher;
    let http = tokio::spawn(async move {
        let serve = axum::serve(listener, router(state)).with_graceful_shutdown(async move {
            let _ = http_watcher.wait_for(|stop| *stop).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "http server failed");
        }
    });
    tracing::info!(%addr, database = %settings.database.describe(), "airlock listening");
    tasks.extend([scheduler, http, reloader]);
    Ok(Server {
        addr,
        shutdown,
        tasks,
        checkpointer,
        engine,
    })
}
