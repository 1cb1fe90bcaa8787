//! Clients that connect and then say too little, too slowly, must not delay a
//! revocation or keep the API from answering: the real server on port 0 with
//! a real SQLite file and a `command` connector (a process to spawn, so a
//! revocation needs descriptors of its own), and raw sockets on 127.0.0.1
//! that send part of a request and then nothing.
//!
//! Bounded: a few thousand connections at most, each test under a time limit.
//! The server raises this process's soft descriptor limit to its hard limit
//! when it starts, which covers both ends of every connection here.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers fail by panicking, with the value in the message"
)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use airlock_server::api::{parse_time, CreateRequest, DurationInput, RequestView};
use airlock_server::client::Client;
use airlock_server::config::{token_hash, Settings};
use airlock_server::server::{start, Server};
use airlock_testkit::{bounded, until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

mod fixtures;

const TOKEN: &str = "slow-clients-test-token";

/// How late a revocation may land after the grant's expiry, whatever the
/// stalled clients do.
const ON_TIME: Duration = Duration::from_secs(1);

/// A request line and part of the headers: what a slow-loris client sends
/// before going quiet.
const STALL: &[u8] = b"GET /healthz HTTP/1.1\r\nhost: airlock\r\nx-still-typing: ";

struct Harness {
    server: Server,
    base: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// A server whose `[server]` table adds `limits`; `logs-read` is granted
/// and revoked by a script that logs each call.
async fn boot(limits: &str) -> Harness {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().display().to_string();
    let log = dir.path().join("connector.log");
    std::fs::write(
        dir.path().join("log.sh"),
        format!(
            "#!/bin/sh\ncase \"$1\" in grant|revoke) echo \"$1 $4\" >> '{}' ;; esac\nexit 0\n",
            log.display()
        ),
    )
    .unwrap();
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = '{root}/data'
reconcile_every = "off"
{limits}

[connectors.log]
type = "command"
program = "/bin/sh"
args = ['{root}/log.sh']
timeout = "5s"

[users.alice]
groups = ["eng"]
token_sha256 = "{}"

[entitlements.logs-read]
requestable_by = ["eng"]
max_duration = "1h"
auto_approve = true
require_reason = false
connector = "log"
"#,
        token_hash(TOKEN)
    );
    let settings = Settings::parse("test.toml", &toml, dir.path()).unwrap();
    let server = start(settings).await.unwrap();
    Harness {
        base: format!("http://{}", server.addr()),
        server,
        log,
        _dir: dir,
    }
}

impl Harness {
    fn client(&self) -> Client {
        Client::new(&self.base, TOKEN).unwrap()
    }

    /// Opens `count` connections that each send [`STALL`] and then nothing.
    async fn stall(&self, count: usize) -> Vec<TcpStream> {
        let addr = self.server.addr();
        let mut stalled = Vec::with_capacity(count);
        for _ in 0..count {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            stream.write_all(STALL).await.unwrap();
            stalled.push(stream);
        }
        stalled
    }

    /// Waits until the connector has revoked `id`; returns the request.
    async fn revoked(&self, id: &str) -> RequestView {
        let client = self.client();
        until(Duration::from_secs(10), "the revocation", || async {
            let r = client.get_request(id).await.unwrap();
            r.deprovisioned_at.is_some().then_some(r)
        })
        .await
    }

    fn logged(&self, line: &str) -> bool {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .any(|l| l == line)
    }
}

fn for_secs(secs: u64) -> CreateRequest {
    CreateRequest {
        duration: Some(DurationInput::Seconds(secs)),
        ..fixtures::ask("logs-read")
    }
}

/// How long after its expiry the grant's removal was confirmed.
fn lateness(r: &RequestView) -> Duration {
    let expired = parse_time(r.expires_at.as_deref().unwrap()).unwrap();
    let removed = parse_time(r.deprovisioned_at.as_deref().unwrap()).unwrap();
    expired.until(removed)
}

/// Whether the server still holds `stream` open without having answered.
fn held(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
}

/// Waits until the server has closed `stream`, or answered on it and then
/// closed it; returns what it said.
async fn closed_by_server(stream: &mut TcpStream, limit: Duration) -> String {
    let mut said = Vec::new();
    let read = tokio::time::timeout(limit, stream.read_to_end(&mut said)).await;
    let read = read.unwrap_or_else(|_| panic!("still open after {limit:?}"));
    // A reset is a close too: the server dropped what it had not read.
    if let Err(e) = read {
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset, "{e}");
    }
    String::from_utf8_lossy(&said).into_owned()
}

/// One whole request on a raw connection that stays open: the status and
/// body of the answer.
async fn exchange(stream: &mut TcpStream, request: &str) -> (u16, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(
            n > 0,
            "closed before answering: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&got).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length = head
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse::<usize>().unwrap())
            })
            .unwrap_or(0);
        if body.len() >= length {
            let status = head.split(' ').nth(1).unwrap().parse().unwrap();
            return (status, body.to_owned());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_stalled_connections_neither_delay_a_revocation_nor_the_api() {
    const STALLED: usize = 3000;
    let header_timeout = Duration::from_secs(8);
    bounded(Duration::from_secs(60), async {
        let h = boot(r#"header_timeout = "8s""#).await;
        let opened = Instant::now();
        let mut stalled = h.stall(STALLED).await;
        eprintln!(
            "{STALLED} stalled connections opened in {:?}",
            opened.elapsed()
        );

        // The API answers a fresh client while they are held.
        let asked = Instant::now();
        let me = h.client().me().await.unwrap();
        assert_eq!(me.user, "alice");
        eprintln!("a fresh call answered in {:?}", asked.elapsed());

        let r = h.client().create_request(&for_secs(2)).await.unwrap();
        let r = h.revoked(&r.id).await;
        assert_eq!(r.state, "expired");
        assert!(h.logged(&format!("revoke {}", r.id)));
        let late = lateness(&r);
        eprintln!("revoked {late:?} after expiry");
        assert!(late <= ON_TIME, "revoked {late:?} after expiry");

        // Every stalled connection was held all along, not refused...
        assert!(
            opened.elapsed() < header_timeout,
            "the test ran too slowly to tell"
        );
        let still = stalled.iter().filter(|s| held(s)).count();
        assert_eq!(still, STALLED, "only {still} of {STALLED} were held");
        // ...and the server closes each once its header timeout has passed.
        for stream in &mut stalled {
            let left = (header_timeout + Duration::from_secs(5)).saturating_sub(opened.elapsed());
            let said = closed_by_server(stream, left).await;
            assert!(
                said.is_empty() || said.starts_with("HTTP/1.1 408"),
                "{said}"
            );
        }
        assert!(opened.elapsed() >= header_timeout);
        assert_eq!(h.client().me().await.unwrap().user, "alice");
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_clients_are_refused_at_once_and_revocations_go_on() {
    const CAP: usize = 8;
    bounded(Duration::from_secs(30), async {
        let h = boot(&format!("max_connections = {CAP}\nheader_timeout = \"5s\"")).await;
        // The grant is asked for on a connection that then stalls too, so
        // no connection of the test's own is left closing while the cap
        // fills.
        let mut first = TcpStream::connect(h.server.addr()).await.unwrap();
        let body = r#"{"entitlement": "logs-read", "duration": 2}"#;
        let (status, answer) = exchange(
            &mut first,
            &format!(
                "POST /v1/requests HTTP/1.1\r\nhost: airlock\r\nauthorization: Bearer {TOKEN}\r\n\
                 content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert_eq!(status, 201, "{answer}");
        let id = serde_json::from_str::<RequestView>(&answer).unwrap().id;
        first.write_all(STALL).await.unwrap();
        let mut stalled = h.stall(CAP - 1).await;
        stalled.push(first);

        // One more is answered 503 and closed at once, not left waiting.
        let mut extra = TcpStream::connect(h.server.addr()).await.unwrap();
        let _ = extra
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: airlock\r\n\r\n")
            .await;
        let said = closed_by_server(&mut extra, Duration::from_secs(2)).await;
        assert!(
            said.is_empty() || said.starts_with("HTTP/1.1 503"),
            "{said}"
        );

        // The grant expires while no client can get in, and is revoked: the
        // target says so now, the API (once it can be asked) says when.
        let revoke = format!("revoke {id}");
        until(Duration::from_secs(10), "the revoke call", || async {
            h.logged(&revoke).then_some(())
        })
        .await;
        assert!(stalled.iter().all(held), "the cap was not full throughout");

        // Once the stalled connections time out, clients get in again.
        for stream in &mut stalled {
            closed_by_server(stream, Duration::from_secs(8)).await;
        }
        let r = until(Duration::from_secs(5), "a free connection", || async {
            h.client().get_request(&id).await.ok()
        })
        .await;
        assert_eq!(r.state, "expired");
        let late = lateness(&r);
        assert!(late <= ON_TIME, "revoked {late:?} after expiry");
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_in_time_is_refused_naming_the_body() {
    bounded(Duration::from_secs(20), async {
        let h = boot(r#"body_timeout = "1s""#).await;
        let mut slow = TcpStream::connect(h.server.addr()).await.unwrap();
        let sent = Instant::now();
        let (status, answer) = exchange(
            &mut slow,
            &format!(
                "POST /v1/requests HTTP/1.1\r\nhost: airlock\r\nauthorization: Bearer {TOKEN}\r\n\
                 content-type: application/json\r\ncontent-length: 100\r\n\r\n{{\"entitl"
            ),
        )
        .await;
        assert_eq!(status, 408, "{answer}");
        let error: serde_json::Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(error["error"]["field"], "body", "{answer}");
        assert_eq!(error["error"]["code"], "timeout", "{answer}");
        assert!(
            error["error"]["message"]
                .as_str()
                .unwrap()
                .contains("within 1s"),
            "{answer}"
        );
        assert!(sent.elapsed() >= Duration::from_secs(1));
        h.server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_its_answers_is_closed_after_the_idle_timeout() {
    bounded(Duration::from_secs(30), async {
        let h = boot(r#"idle_timeout = "1s""#).await;
        let mut stream = TcpStream::connect(h.server.addr()).await.unwrap();
        let began = Instant::now();
        // Asks again and again and reads nothing: the answers fill both
        // socket buffers, the server's writes stall, and then it stops
        // reading too, until its watchdog closes the connection.
        let ask = b"GET /openapi.json HTTP/1.1\r\nhost: airlock\r\n\r\n";
        let error = loop {
            if let Err(e) = stream.write_all(ask).await {
                break e;
            }
        };
        assert!(
            matches!(
                error.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "{error}"
        );
        assert!(began.elapsed() >= Duration::from_secs(1));
        eprintln!("closed {:?} after the first request", began.elapsed());
        assert_eq!(h.client().me().await.unwrap().user, "alice");
        h.server.shutdown().await;
    })
    .await;
}
