//! `airlock login` / `logout` against a real identity provider
//! (`oidc-provider`, started by the test) and a real server: the real
//! binary signs in through the device flow and through the browser with
//! PKCE while the test plays the person at the browser; the cached token
//! is owner-only, used by other commands, renewed with the refresh token
//! once it expires, refused once others can read it, and revoked and
//! forgotten by `logout`; and `airlock request` answered with a step-up
//! challenge signs in again with a second factor and retries.

#![expect(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code: a failed step should fail the test"
)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use airlock_server::config::Settings;
use airlock_server::server::{start, Server};
use airlock_testkit::oidc::{Browser, Provider, ACR_MFA, CLI_CLIENT};
use airlock_testkit::{bounded, until};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

const BIN: &str = env!("CARGO_BIN_EXE_airlock");
/// A safety net, not a timing check: a device login polls at the
/// provider's interval, which each `slow_down` lengthens by 5 s, and one
/// test waits out a 15 s token; on a loaded 2-core machine the three tests
/// of this file run side by side. (CI once took over 120 s here.)
const BOUND: Duration = Duration::from_secs(300);

/// A server trusting the provider's ID tokens for `airlock-cli`: `dev` may
/// read logs at once, and `prod-db` too with MFA in the last 5 minutes.
async fn boot(issuer: &str, dir: &Path) -> Server {
    let root = dir.display();
    let toml = format!(
        r#"
[server]
listen = "127.0.0.1:0"
data_dir = '{root}/data'

[server.oidc]
issuer = "{issuer}"
audience = "https://airlock.test"
client_id = "{CLI_CLIENT}"
mfa_acr_values = ["{ACR_MFA}"]
clock_skew = "0s"

[connectors.log]
type = "command"
program = "/bin/true"

[entitlements.logs-read]
max_duration = "1h"
require_reason = false
connector = "log"
requestable_by = ["dev"]
auto_approve = true

[entitlements.prod-db]
max_duration = "1h"
require_reason = false
connector = "log"
requestable_by = ["dev"]
auto_approve = true
require_mfa_within = "5m"
"#
    );
    let settings = Settings::parse("login-test.toml", &toml, dir).unwrap();
    start(settings).await.unwrap()
}

/// A provider, a server trusting it, and the CLI of one person, whose
/// config directory is in the returned folder; `None` (said loudly) where
/// the provider cannot run outside CI.
async fn setup() -> Option<(Provider, Server, Cli, tempfile::TempDir)> {
    let idp = Provider::start().await?;
    let dir = tempfile::tempdir().unwrap();
    let server = boot(&idp.issuer, dir.path()).await;
    let cli = Cli {
        url: format!("http://{}", server.addr()),
        config_home: dir.path().join("home/.config"),
    };
    Some((idp, server, cli, dir))
}

/// The CLI as one person on one machine: its own config directory.
struct Cli {
    url: String,
    config_home: PathBuf,
}

impl Cli {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(args)
            .env("AIRLOCK_URL", &self.url)
            .env("XDG_CONFIG_HOME", &self.config_home)
            .env_remove("AIRLOCK_TOKEN")
            .env("AIRLOCK_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    /// Runs a command to its end: success, stdout, stderr.
    async fn run(&self, args: &[&str]) -> (bool, String, String) {
        let out = self.command(args).output().await.unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Runs a command that succeeds; its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(args).await;
        assert!(ok, "airlock {args:?} failed: {err}{out}");
        out
    }

    /// Starts a command that signs in; returns it and its stderr lines.
    fn spawn(&self, args: &[&str]) -> Running {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
        Running { child, stderr }
    }

    /// The one token cache file, and what it holds.
    fn cache(&self) -> (PathBuf, Value) {
        let dir = self.config_home.join("airlock");
        let files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let path = files.into_iter().next().unwrap();
        let entry = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        (path, entry)
    }
}

struct Running {
    child: tokio::process::Child,
    stderr: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
}

impl Running {
    /// Reads stderr until a line contains `needle`; returns that line.
    async fn line_with(&mut self, needle: &str) -> String {
        loop {
            match self.stderr.next_line().await.unwrap() {
                Some(line) if line.contains(needle) => return line,
                Some(_) => {}
                None => panic!("airlock ended without printing `{needle}`"),
            }
        }
    }

    /// The device link printed (`To sign in, open LINK (or ...)`).
    async fn device_link(&mut self) -> String {
        let line = self.line_with("To sign in, open ").await;
        line.split_whitespace()
            .find(|w| w.contains("user_code="))
            .unwrap_or_else(|| panic!("no link in `{line}`"))
            .to_owned()
    }

    /// Waits for the end: its stdout, after checking it succeeded.
    async fn succeeds(self) -> String {
        let out = self.child.wait_with_output().await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "airlock failed: {stdout}");
        stdout
    }
}

/// `airlock login` through the device flow as `who`, the test at the browser.
async fn device_login(cli: &Cli, idp: &Provider, who: &str, mfa: bool) -> String {
    let mut login = cli.spawn(&["login"]);
    let link = login.device_link().await;
    let page = Browser::new(idp).approve_device(&link, who, mfa).await;
    assert!(page.contains("Sign-in Success"), "{page}");
    login.succeeds().await
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_login_is_cached_owner_only_renewed_and_forgotten_by_logout() {
    bounded(BOUND, async {
        let Some((idp, server, cli, _dir)) = setup().await else {
            return;
        };

        let (ok, _, err) = cli.run(&["whoami"]).await;
        assert!(!ok && err.contains("run `airlock login`"), "{err}");

        let said = device_login(&cli, &idp, "alice", false).await;
        assert!(said.contains("as alice (groups: dev)"), "{said}");
        let (path, entry) = cli.cache();
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(entry["server"], cli.url.as_str());
        let first = entry["token"].as_str().unwrap().to_owned();
        assert!(entry["refresh_token"].is_string(), "{entry}");

        // Other commands use it.
        assert!(cli.ok(&["whoami"]).await.starts_with("alice (groups: dev"));
        cli.ok(&["request", "logs-read", "--for", "10m"]).await;
        let listed = cli.ok(&["list", "--json"]).await;
        let listed: Value = serde_json::from_str(&listed).unwrap();
        assert_eq!(listed[0]["entitlement"], "logs-read", "{listed}");
        assert_eq!(listed[0]["requester"], "alice", "{listed}");

        // The provider's ID tokens live 15 seconds: once this one is about
        // to expire, the next command renews it with the refresh token.
        let renewed = until(
            Duration::from_secs(30),
            "the token to be renewed",
            || async {
                assert!(cli.ok(&["whoami"]).await.starts_with("alice"));
                let token = cli.cache().1["token"].as_str().unwrap().to_owned();
                (token != first).then_some(token)
            },
        )
        .await;
        assert_eq!(mode(&cli.cache().0), 0o600);
        // The server itself refuses the first token once it expired.
        let exp = token_claims(&first)["exp"].as_i64().unwrap();
        until(
            Duration::from_secs(30),
            "the first token to expire",
            || async { (airlock_testkit::wall_clock_unix_millis() > exp * 1000).then_some(()) },
        )
        .await;
        let old = airlock_server::client::Client::new(&cli.url, &first)
            .unwrap()
            .me()
            .await
            .unwrap_err();
        assert_eq!(old.status(), Some(401), "{old}");
        assert!(cli.ok(&["whoami"]).await.starts_with("alice"));
        assert_ne!(renewed, first);

        // A cache others can read is refused, as ssh refuses such keys.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let (ok, _, err) = cli.run(&["whoami"]).await;
        assert!(!ok && err.contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();

        // Logout revokes the refresh token at the provider and forgets it.
        let refresh = cli.cache().1["refresh_token"].as_str().unwrap().to_owned();
        let out = cli.ok(&["logout"]).await;
        assert!(
            out.contains("revoked the refresh token") && out.contains("signed out"),
            "{out}"
        );
        assert!(!path.exists());
        let (status, body) = idp.refresh(&refresh).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some("invalid_grant")),
            "{body}"
        );
        let (ok, _, err) = cli.run(&["whoami"]).await;
        assert!(!ok && err.contains("run `airlock login`"), "{err}");
        assert!(cli.ok(&["logout"]).await.contains("not signed in"));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_login_with_pkce_and_a_loopback_redirect() {
    bounded(BOUND, async {
        let Some((idp, server, cli, _dir)) = setup().await else {
            return;
        };
        let mut login = cli.spawn(&["login", "--flow", "browser", "--no-open"]);
        login.line_with("To sign in, open this URL").await;
        let url = login.line_with("/auth?").await.trim().to_owned();
        for (param, value) in [
            ("code_challenge_method", "S256"),
            ("client_id", CLI_CLIENT),
            ("response_type", "code"),
        ] {
            assert!(url.contains(&format!("{param}={value}")), "{url}");
        }
        assert!(
            url.contains("redirect_uri=http%3A%2F%2F127.0.0.1%3A"),
            "{url}"
        );
        let page = Browser::new(&idp).authorize(&url, "alice", false).await;
        assert!(page.contains("Signed in to Airlock"), "{page}");
        let said = login.succeeds().await;
        assert!(said.contains("as alice"), "{said}");
        assert_eq!(mode(&cli.cache().0), 0o600);
        assert!(cli.ok(&["whoami"]).await.starts_with("alice"));
        server.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_needing_fresh_mfa_signs_in_again_and_is_retried() {
    bounded(BOUND, async {
        let Some((idp, server, cli, _dir)) = setup().await else {
            return;
        };
        device_login(&cli, &idp, "alice", false).await;
        let without = cli.cache().1["token"].as_str().unwrap().to_owned();
        assert!(token_claims(&without)["acr"] != ACR_MFA);

        let mut request = cli.spawn(&["request", "prod-db", "--for", "10m", "--json"]);
        let said = request.line_with("multi-factor").await;
        assert!(said.contains("within the last 300 seconds"), "{said}");
        let link = request.device_link().await;
        Browser::new(&idp)
            .approve_device(&link, "alice", true)
            .await;
        let out = request.succeeds().await;
        let granted: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(granted["entitlement"], "prod-db", "{granted}");
        assert_eq!(granted["requester"], "alice", "{granted}");

        // The new sign-in is cached, with the second factor.
        let with = cli.cache().1["token"].as_str().unwrap().to_owned();
        assert_eq!(token_claims(&with)["acr"], ACR_MFA);

        // With a token given outside the cache, it says what to do instead.
        let (ok, _, err) = cli
            .run(&["request", "prod-db", "--for", "5m", "--token", &without])
            .await;
        assert!(
            !ok && err.contains("airlock login --max-age 300") && err.contains("--token"),
            "{err}"
        );
        server.shutdown().await;
    })
    .await;
}

/// A JWT's claims, unverified (the server verifies; the test only reads).
fn token_claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}
