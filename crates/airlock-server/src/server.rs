//! Wires settings into a running server: store, connectors, engine,
//! scheduler and HTTP listener, with a graceful shutdown.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use airlock_connectors::command::{CommandConnector, CommandSettings};
use airlock_connectors::mariadb::MariaDbConnector;
use airlock_connectors::postgres::PostgresConnector;
use airlock_connectors::webhook::{WebhookConnector, WebhookSettings};
use airlock_connectors::Connector;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{ConnectorSettings, Settings};
use crate::engine::{Clock, Engine, SystemClock};
use crate::http::{router, AppState};
use crate::store::sql::SqlStore;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("database `{path}`: {source}")]
    Store { path: String, source: StoreError },
    #[error("connector `{name}`: {message}")]
    Connector { name: String, message: String },
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
}

impl Server {
    /// The address actually bound (useful with port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting requests and stops the scheduler; waits for both.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
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
        };
        connectors.insert(name.clone(), connector);
    }
    Ok(connectors)
}

/// Opens the store, starts the scheduler and serves the API on `settings.listen`.
pub async fn start(settings: Settings) -> Result<Server, StartError> {
    start_with_clock(settings, Arc::new(SystemClock)).await
}

pub async fn start_with_clock(
    settings: Settings,
    clock: Arc<dyn Clock>,
) -> Result<Server, StartError> {
    let store = SqlStore::open(&settings.database)
        .await
        .map_err(|source| StartError::Store {
            path: settings.database.describe(),
            source,
        })?;
    let connectors = build_connectors(&settings)?;
    let engine = Engine::new(
        Arc::new(store),
        Arc::new(settings.catalog.clone()),
        settings.lifecycle.clone(),
        settings.revocation_overdue_after,
        connectors,
        clock,
    );
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
    };
    let health_engine = Arc::clone(&engine);
    tokio::spawn(async move { health_engine.check_connectors().await });
    let scheduler = tokio::spawn(Arc::clone(&engine).run_scheduler(watcher.clone()));
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
    Ok(Server {
        addr,
        shutdown,
        tasks: vec![scheduler, http],
    })
}
