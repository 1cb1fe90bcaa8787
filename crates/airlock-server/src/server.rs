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
use tokio::sync::{mpsc, watch};

use crate::checkpoint::{self, CheckpointError, Checkpointer};
use crate::config::{ConnectorSettings, Settings};
use crate::elevation::ElevationSigner;
use crate::engine::{Clock, Engine, EngineParts, PolicyChange, SystemClock};
use crate::http::{router, AppState};
use crate::notify;
use crate::oidc::{HttpKeySource, Verifier};
use crate::policy::{Policies, PolicyLoadError};
use crate::serve::{connection_cap, raise_descriptor_limit, serve};
use crate::store::sql::{Location, SqlStore};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database `{path}`: {source}")]
    Store { path: String, source: StoreError },
    #[error("connector `{name}`: {message}")]
    Connector { name: String, message: String },
    #[error("policies: {0}")]
    Policy(#[from] PolicyLoadError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// Reloading on SIGHUP is part of how an operator runs the server, so a
    /// handler that cannot be installed stops the start rather than being
    /// found missing later.
    #[error("cannot listen for SIGHUP: {0}")]
    Signal(std::io::Error),
    #[error("another airlock is already running on `{database}` (it holds the lock `{lock}`); stop it first, or give this one another --data-dir or database")]
    Locked { database: String, lock: String },
    #[error("cannot lock `{lock}`: {message}")]
    Lock { lock: String, message: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("cannot record accepting the broken audit chain: {0}")]
    AcceptBreak(String),
    #[error("server.oidc: {0}")]
    Oidc(#[from] crate::oidc::FetchError),
    #[error("{0}")]
    Notifications(String),
}

/// Why a running server stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("the {task} stopped unexpectedly")]
    Stopped { task: &'static str },
    #[error("the {task} failed: {message}")]
    Failed { task: &'static str, message: String },
    #[error("the {task} panicked: {message}")]
    Panicked { task: &'static str, message: String },
}

/// How one long-running task ended.
struct Ended {
    task: &'static str,
    outcome: Result<(), String>,
    panicked: Option<String>,
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    ended: mpsc::UnboundedReceiver<Ended>,
    running: usize,
    /// Signs the audit head once everything else has stopped.
    audit: Option<(Arc<Checkpointer>, Arc<Engine>)>,
    /// Held while the server runs: no second server on the same SQLite file.
    _database_lock: Option<std::fs::File>,
}

impl Server {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The public key audit checkpoints are signed with (`ed25519:` hex).
    pub fn checkpoint_key(&self) -> String {
        self.audit
            .as_ref()
            .map(|(checkpointer, _)| checkpointer.public_key())
            .unwrap_or_default()
    }

    /// Stops accepting requests and stops the scheduler; waits for every
    /// long-running task to end, then signs the final audit head.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.running > 0 && self.ended.recv().await.is_some() {
            self.running -= 1;
        }
        if let Some((checkpointer, engine)) = &self.audit {
            // Checks answered until the HTTP server stopped.
            if let Err(e) = engine.flush_checks().await {
                tracing::warn!(error = %e, "could not record the last grant checks");
            }
            sign_or_refuse(checkpointer, engine).await;
        }
    }

    /// Runs until shutdown is asked for through [`Server::shutdown_handle`],
    /// or until a long-running task (the scheduler, the HTTP server, the
    /// SIGHUP reloader, the reconciler) ends on its own: then the others
    /// are stopped too and the error names the task.
    pub async fn wait(mut self) -> Result<(), ServeError> {
        let first = self.ended.recv().await;
        let stopping = *self.shutdown.borrow();
        self.running = self.running.saturating_sub(1);
        let result = match first {
            _ if stopping => Ok(()),
            None => Err(ServeError::Stopped { task: "server" }),
            Some(ended) => Err(ended.into_error()),
        };
        if let Err(e) = &result {
            tracing::error!(error = %e, "stopping the server");
        }
        self.shutdown().await;
        result
    }

    pub fn shutdown_handle(&self) -> watch::Sender<bool> {
        self.shutdown.clone()
    }
}

impl Ended {
    fn into_error(self) -> ServeError {
        let task = self.task;
        match (self.panicked, self.outcome) {
            (Some(message), _) => ServeError::Panicked { task, message },
            (None, Err(message)) => ServeError::Failed { task, message },
            (None, Ok(())) => ServeError::Stopped { task },
        }
    }
}

/// Runs `work` as a long-running task of the server and reports how it
/// ended (returned, failed, panicked) on `ended`.
fn supervise<F>(task: &'static str, ended: &mpsc::UnboundedSender<Ended>, work: F)
where
    F: std::future::Future<Output = Result<(), String>> + Send + 'static,
{
    let handle = tokio::spawn(work);
    let ended = ended.clone();
    tokio::spawn(async move {
        let report = match handle.await {
            Ok(outcome) => Ended {
                task,
                outcome,
                panicked: None,
            },
            Err(e) => Ended {
                task,
                outcome: Ok(()),
                panicked: Some(panic_message(e)),
            },
        };
        let _ = ended.send(report);
    });
}

fn panic_message(e: tokio::task::JoinError) -> String {
    if !e.is_panic() {
        return e.to_string();
    }
    let payload = e.into_panic();
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned())
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
async fn reload_on_hangup(
    engine: Arc<Engine>,
    mut hangups: tokio::signal::unix::Signal,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    loop {
        let stopping = async {
            // The guard `wait_for` returns is not `Send`: keep it inside.
            let _ = shutdown.wait_for(|stop| *stop).await;
        };
        let got = tokio::select! {
            () = stopping => return Ok(()),
            got = hangups.recv() => got,
        };
        if got.is_none() {
            return Err("the SIGHUP stream closed".to_owned());
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

/// Ends with `Ok` once `shutdown` has turned true: a task that returns
/// before then stopped on its own.
async fn until_stopped<F: std::future::Future<Output = ()>>(
    work: F,
    shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    work.await;
    if *shutdown.borrow() {
        Ok(())
    } else {
        Err("it returned before shutdown".to_owned())
    }
}

/// A SQLite database belongs to one server process: its scheduler settles
/// every attempt still in flight at start as lost (see
/// `Engine::recover_lost_attempts`), which is only true if no other process
/// is making them. The lock is `<database>.lock` beside the file, held for
/// the life of the process (the OS frees it when the process dies).
/// PostgreSQL is shared by replicas on purpose: nothing to lock.
fn lock_database(location: &Location) -> Result<Option<std::fs::File>, StartError> {
    let Location::Sqlite(path) = location else {
        return Ok(None);
    };
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    let lock = std::path::PathBuf::from(name);
    let failed = |message: String| StartError::Lock {
        lock: lock.display().to_string(),
        message,
    };
    if let Some(dir) = lock.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| failed(e.to_string()))?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|e| failed(e.to_string()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError::Locked {
            database: path.display().to_string(),
            lock: lock.display().to_string(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(failed(e.to_string())),
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
    let database_lock = lock_database(&settings.database)?;
    let store = SqlStore::open(&settings.database)
        .await
        .map_err(|source| StartError::Store {
            path: settings.database.describe(),
            source,
        })?;
    let store: Arc<dyn Store> = Arc::new(store);
    let key = checkpoint::load_or_generate_key(
        &settings.audit.checkpoint_key,
        checkpoint::KeyKind::Checkpoint,
    )?;
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
    let channels = notify::build_channels(&settings.notifications.channels)
        .map_err(StartError::Notifications)?;
    let engine = Engine::new(EngineParts {
        store,
        catalog: Arc::new(settings.catalog.clone()),
        policies: Arc::clone(&policies),
        lifecycle: settings.lifecycle.clone(),
        overdue_after: settings.revocation_overdue_after,
        connectors,
        clock,
        routing: settings.notifications.routing.clone(),
        token_max_lifetime: settings.token_max_lifetime,
        access_reviews: settings.access_reviews.clone(),
        tickets: settings.tickets.clone(),
        idle_limits: settings.idle_limits.clone(),
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
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .map_err(StartError::Signal)?;
    let open_files = raise_descriptor_limit();
    let cap = connection_cap(settings.http.max_connections, open_files);
    let state = AppState {
        engine: Arc::clone(&engine),
        tokens: Arc::new(settings.token_hashes.clone()),
        mfa_header: settings.mfa_header.clone(),
        body_timeout: settings.http.body_timeout,
        checkpoint_key: Some(checkpointer.public_key()),
        oidc: match &settings.oidc {
            Some(oidc) => Some(Arc::new(Verifier::new(
                oidc.clone(),
                Arc::new(HttpKeySource::new(oidc.issuer.clone())?),
            ))),
            None => None,
        },
        scim: settings.scim.clone().map(Arc::new),
        elevation: Arc::new(ElevationSigner::new(
            checkpoint::load_or_generate_key(
                &settings.elevation.key,
                checkpoint::KeyKind::Elevation,
            )?,
            settings.elevation.clone(),
        )),
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
    match engine.settle_external_terms().await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(
            count = n,
            "ended requests of external principals whose terms changed in the configuration"
        ),
        Err(e) => {
            tracing::error!(error = %e, "could not check the requests of external principals against the configuration")
        }
    }
    let (ended, ended_rx) = mpsc::unbounded_channel();
    let mut running = 0;
    supervise(
        "scheduler",
        &ended,
        until_stopped(
            Arc::clone(&engine).run_scheduler(watcher.clone()),
            watcher.clone(),
        ),
    );
    running += 1;
    supervise(
        "check recorder",
        &ended,
        until_stopped(
            Arc::clone(&engine).run_check_recorder(watcher.clone()),
            watcher.clone(),
        ),
    );
    running += 1;
    let dispatcher = notify::Dispatcher::new(notify::DispatcherParts {
        engine: Arc::clone(&engine),
        channels,
        book: Arc::new(notify::ConfigAddressBook::new(
            Arc::new(settings.catalog.clone()),
            settings.notifications.emails.clone(),
            settings.scim.is_some().then(|| engine.shared_store()),
        )),
        retry: settings.notifications.retry,
        keep_settled: settings.notifications.keep_settled,
    });
    supervise(
        "notification dispatcher",
        &ended,
        until_stopped(dispatcher.run(watcher.clone()), watcher.clone()),
    );
    running += 1;
    if let Err(e) = engine.record_policy_start().await {
        tracing::error!(error = %e, "could not record the policy set in force");
    }
    // A checkpoint at every start: the log exists (and covers the history so
    // far) from the first minute, not only after the first interval.
    sign_or_refuse(&checkpointer, &engine).await;
    supervise(
        "SIGHUP reloader",
        &ended,
        reload_on_hangup(Arc::clone(&engine), hangups, watcher.clone()),
    );
    running += 1;
    match settings.reconcile_every {
        Some(every) => {
            tracing::info!(every = %humantime::format_duration(every), "reconciliation scheduled");
            supervise(
                "reconciler",
                &ended,
                until_stopped(
                    Arc::clone(&engine).run_reconciler(every, watcher.clone()),
                    watcher.clone(),
                ),
            );
            running += 1;
        }
        None => tracing::info!("scheduled reconciliation is off (server.reconcile_every)"),
    }
    match settings.activity_sample_every {
        Some(every) => {
            supervise(
                "activity sampler",
                &ended,
                until_stopped(
                    Arc::clone(&engine).run_activity_sampler(every, watcher.clone()),
                    watcher.clone(),
                ),
            );
            running += 1;
        }
        None => tracing::info!(
            "sampling the sessions of active grants is off (server.activity_sample_every)"
        ),
    }
    // Runs even without templates: removals decided in earlier campaigns
    // are carried out, and open campaigns still remind and escalate.
    supervise(
        "access reviews",
        &ended,
        until_stopped(
            Arc::clone(&engine).run_access_reviews(watcher.clone()),
            watcher.clone(),
        ),
    );
    running += 1;
    if settings.idle_limits.is_empty() {
        tracing::info!("no entitlement sets an idle_limit");
    } else {
        supervise(
            "idle limits",
            &ended,
            until_stopped(
                Arc::clone(&engine).run_idle_limits(watcher.clone()),
                watcher.clone(),
            ),
        );
        running += 1;
    }
    supervise(
        "audit checkpointer",
        &ended,
        until_stopped(
            run_checkpoints(
                Arc::clone(&checkpointer),
                Arc::clone(&engine),
                settings.audit.checkpoint_every,
                watcher.clone(),
            ),
            watcher.clone(),
        ),
    );
    running += 1;
    let limits = settings.http.clone();
    tracing::info!(
        header_timeout = %humantime::format_duration(limits.header_timeout),
        body_timeout = %humantime::format_duration(limits.body_timeout),
        idle_timeout = %humantime::format_duration(limits.idle_timeout),
        max_connections = cap,
        "http limits"
    );
    let http_watcher = watcher.clone();
    supervise("HTTP server", &ended, async move {
        serve(listener, router(state), limits, cap, http_watcher.clone())
            .await
            .map_err(|e| format!("the listener failed: {e}"))?;
        until_stopped(async {}, http_watcher).await
    });
    running += 1;
    tracing::info!(%addr, database = %settings.database.describe(), "airlock listening");
    Ok(Server {
        addr,
        shutdown,
        ended: ended_rx,
        running,
        audit: Some((checkpointer, engine)),
        _database_lock: database_lock,
    })
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;
    use std::time::Duration;

    use super::*;

    type Task = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;

    /// A server made of `tasks` alone, supervised as `start` does.
    fn server_of(shutdown: watch::Sender<bool>, tasks: Vec<(&'static str, Task)>) -> Server {
        let (ended, ended_rx) = mpsc::unbounded_channel();
        let running = tasks.len();
        for (task, work) in tasks {
            supervise(task, &ended, work);
        }
        Server {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            shutdown,
            ended: ended_rx,
            running,
            audit: None,
            _database_lock: None,
        }
    }

    /// A task that runs until shutdown, as a healthy one does.
    fn healthy(shutdown: &watch::Sender<bool>) -> Task {
        let mut stop = shutdown.subscribe();
        Box::pin(async move {
            let _ = stop.wait_for(|s| *s).await.map(|_| ());
            Ok(())
        })
    }

    async fn outcome(server: Server) -> Result<(), String> {
        tokio::time::timeout(Duration::from_secs(5), server.wait())
            .await
            .map_err(|_| "wait did not return".to_owned())?
            .map_err(|e| e.to_string())
    }

    #[tokio::test]
    async fn any_task_ending_stops_the_server_with_an_error_naming_it() {
        let (shutdown, _) = watch::channel(false);
        let returned: Task = Box::pin(async { Ok(()) });
        let server = server_of(
            shutdown.clone(),
            vec![("HTTP server", healthy(&shutdown)), ("scheduler", returned)],
        );
        assert_eq!(
            outcome(server).await,
            Err("the scheduler stopped unexpectedly".to_owned())
        );

        let (shutdown, _) = watch::channel(false);
        let failed: Task = Box::pin(async { Err("the listener failed: boom".to_owned()) });
        let server = server_of(
            shutdown.clone(),
            vec![("scheduler", healthy(&shutdown)), ("HTTP server", failed)],
        );
        assert_eq!(
            outcome(server).await,
            Err("the HTTP server failed: the listener failed: boom".to_owned())
        );
    }

    #[tokio::test]
    async fn a_panicking_task_is_named_with_its_message() {
        let (shutdown, _) = watch::channel(false);
        fn lose_the_plot() -> Result<(), String> {
            panic!("lost the plot")
        }
        let panicked: Task = Box::pin(async { lose_the_plot() });
        let server = server_of(
            shutdown.clone(),
            vec![("scheduler", healthy(&shutdown)), ("reconciler", panicked)],
        );
        assert_eq!(
            outcome(server).await,
            Err("the reconciler panicked: lost the plot".to_owned())
        );
    }

    #[tokio::test]
    async fn asking_for_shutdown_is_a_clean_stop() {
        let (shutdown, _) = watch::channel(false);
        let server = server_of(
            shutdown.clone(),
            vec![
                ("scheduler", healthy(&shutdown)),
                ("HTTP server", healthy(&shutdown)),
            ],
        );
        let _ = server.shutdown_handle().send(true);
        assert_eq!(outcome(server).await, Ok(()));
    }
}
