//! A real OpenID Connect provider for tests: `oidc-provider` (the certified
//! node implementation) started from `crates/airlock-server/tests/oidc/
//! provider.mjs`, and a [`Browser`] that plays the person signing in
//! (entering a device code, logging in with or without a second factor,
//! following the redirects), over plain HTTP with its own cookies.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    reason = "test helpers fail by panicking, with the value in the message"
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{service_path, service_program};

/// The provider script's folder, with its `node_modules` once `npm ci` ran.
pub fn provider_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../airlock-server/tests/oidc")
}

/// The public client `airlock login` signs in as at the test provider.
pub const CLI_CLIENT: &str = "airlock-cli";
/// The `acr` the test provider gives a login with a second factor.
pub const ACR_MFA: &str = "urn:airlock:test:mfa";

/// A running `oidc-provider`; it exits when its stdin closes (on drop).
pub struct Provider {
    pub issuer: String,
    _child: tokio::process::Child,
}

impl Provider {
    /// Starts the provider, or `None` (said loudly) where node or the npm
    /// packages are missing outside CI.
    pub async fn start() -> Option<Provider> {
        let node = service_program("node")?;
        service_path(
            &provider_dir().join("node_modules/oidc-provider"),
            "npm ci --prefix crates/airlock-server/tests/oidc",
        )?;
        let mut child = tokio::process::Command::new(node)
            .arg(provider_dir().join("provider.mjs"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdout = child.stdout.take().unwrap();
        // The provider prints its issuer once it listens: wait for that line.
        let issuer = BufReader::new(stdout)
            .lines()
            .next_line()
            .await
            .unwrap()
            .expect("the provider prints its issuer URL");
        Some(Provider {
            issuer,
            _child: child,
        })
    }

    /// A token for `client` (each client is one person) for `resource`,
    /// through the client-credentials grant.
    pub async fn token(&self, client: &str, resource: &str) -> String {
        let body: Value = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some(format!("{client}-secret")))
            .form(&[
                ("grant_type", "client_credentials"),
                ("scope", "api"),
                ("resource", resource),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body["access_token"]
            .as_str()
            .unwrap_or_else(|| panic!("no access token: {body}"))
            .to_owned()
    }

    /// Puts a new signing key first, as a provider's rotation does.
    pub async fn rotate(&self) -> String {
        reqwest::Client::new()
            .post(format!("{}/test/rotate", self.issuer))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The provider's discovery document.
    pub async fn discovery(&self) -> Value {
        get_json(format!("{}/.well-known/openid-configuration", self.issuer)).await
    }

    pub async fn jwks(&self) -> Value {
        let discovery = self.discovery().await;
        get_json(discovery["jwks_uri"].as_str().unwrap().to_owned()).await
    }

    /// What the token endpoint answers a refresh with `refresh_token`
    /// (status and body), as `airlock login`'s client would ask.
    pub async fn refresh(&self, refresh_token: &str) -> (u16, Value) {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", CLI_CLIENT),
        ];
        post_json(&format!("{}/token", self.issuer), &form).await
    }

    /// A device code for `airlock-cli`, as `airlock login` starts one.
    pub async fn device_code(&self, extra: &[(&str, &str)]) -> Value {
        let endpoint = self.discovery().await["device_authorization_endpoint"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut form = vec![
            ("client_id", CLI_CLIENT),
            ("scope", "openid profile offline_access"),
        ];
        form.extend_from_slice(extra);
        post_json(&endpoint, &form).await.1
    }

    /// The device code's tokens once its user finished (RFC 8628 §3.4).
    pub async fn device_tokens(&self, device_code: &str) -> Value {
        let form = [
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", CLI_CLIENT),
        ];
        post_json(&format!("{}/token", self.issuer), &form).await.1
    }
}

async fn get_json(url: String) -> Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

/// POSTs a form: the status and the JSON answer (`null` if none).
async fn post_json(url: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let response = reqwest::Client::new()
        .post(url)
        .form(form)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// One browser answer: status, `Location`, body.
struct Page {
    status: u16,
    location: Option<String>,
    body: String,
}

/// A person's browser: keeps the provider's cookies, follows nothing on
/// its own, so each step is the test's.
pub struct Browser {
    issuer: String,
    http: reqwest::Client,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    pub fn new(provider: &Provider) -> Browser {
        Browser {
            issuer: provider.issuer.clone(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: BTreeMap::new(),
        }
    }

    fn absolute(&self, url: &str) -> String {
        if url.starts_with("http") {
            url.to_owned()
        } else {
            format!("{}{url}", self.issuer)
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Page {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let response = request.header("cookie", cookie).send().await.unwrap();
        for set in response.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap();
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
        Page {
            status: response.status().as_u16(),
            location: response
                .headers()
                .get("location")
                .map(|l| l.to_str().unwrap().to_owned()),
            body: response.text().await.unwrap(),
        }
    }

    async fn get(&mut self, url: &str) -> Page {
        let request = self.http.get(self.absolute(url));
        self.send(request).await
    }

    async fn post(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let request = self.http.post(self.absolute(url)).form(form);
        self.send(request).await
    }

    /// Follows redirects from `page` on; the last page.
    async fn follow(&mut self, mut page: Page) -> Page {
        for _ in 0..10 {
            match (page.status, page.location.take()) {
                (301..=303 | 307 | 308, Some(next)) => page = self.get(&next).await,
                (_, location) => {
                    page.location = location;
                    return page;
                }
            }
        }
        panic!("more than 10 redirects");
    }

    /// Signs in as `who` at the provider's login page the interaction at
    /// `location` shows, with a second factor or not, and follows on.
    async fn log_in(&mut self, location: &str, who: &str, mfa: bool) -> Page {
        assert!(
            location.contains("/interaction/"),
            "expected the login page, got a redirect to {location}"
        );
        let page = self
            .post(
                &format!("{location}/login"),
                &[("login", who), ("mfa", if mfa { "yes" } else { "no" })],
            )
            .await;
        self.follow(page).await
    }

    /// Opens the verification link with its code (`verification_uri_complete`)
    /// as `airlock login` printed it, confirms the code, signs in as `who`
    /// and ends on the provider's success page, whose text it returns.
    pub async fn approve_device(&mut self, link: &str, who: &str, mfa: bool) -> String {
        let user_code = link
            .split("user_code=")
            .nth(1)
            .unwrap_or_else(|| panic!("no user code in `{link}`"))
            .to_owned();
        // The link's page posts the code back with the session's xsrf token.
        let entry = self.get(link).await;
        let xsrf = hidden(&entry.body, "xsrf");
        let confirm = self
            .post(
                "/device",
                &[("xsrf", &xsrf), ("user_code", user_code.as_str())],
            )
            .await;
        assert_eq!(confirm.status, 200, "{}", confirm.body);
        let xsrf = hidden(&confirm.body, "xsrf");
        let confirmed = self
            .post(
                "/device",
                &[
                    ("xsrf", &xsrf),
                    ("user_code", user_code.as_str()),
                    ("confirm", "yes"),
                ],
            )
            .await;
        let login = confirmed
            .location
            .unwrap_or_else(|| panic!("no login after confirming: {}", confirmed.body));
        let done = self.log_in(&login, who, mfa).await;
        assert_eq!(done.status, 200, "{}", done.body);
        done.body
    }

    /// Opens an authorization URL (`airlock login --flow browser`), signs
    /// in as `who`, and follows the redirects to the loopback redirect,
    /// whose page (served by `airlock login`) it returns.
    pub async fn authorize(&mut self, url: &str, who: &str, mfa: bool) -> String {
        let first = self.get(url).await;
        let login = first
            .location
            .unwrap_or_else(|| panic!("no login page: {} {}", first.status, first.body));
        let done = self.log_in(&login, who, mfa).await;
        assert_eq!(done.status, 200, "{}", done.body);
        done.body
    }
}

/// The value of the hidden form field `name`.
fn hidden(html: &str, name: &str) -> String {
    let needle = format!("name=\"{name}\" value=\"");
    let start = html
        .find(&needle)
        .unwrap_or_else(|| panic!("no `{name}` field in {html}"))
        + needle.len();
    html.get(start..)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned()
}
