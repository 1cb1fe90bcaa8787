// Drives Airlock's web UI in Debian's headless Chromium (never a browser
// Playwright downloads) and runs axe-core on every page. Started by
// tests/ui.rs with the server's URL and the users' tokens in the
// environment; exits non-zero, saying which step failed, on any failure.
// Every wait is for an event (Playwright's auto-waiting, a condition in the
// page), bounded by Playwright's timeouts.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

const base = process.env.AIRLOCK_UI_URL;
const requesterToken = process.env.AIRLOCK_UI_REQUESTER_TOKEN;
const approverToken = process.env.AIRLOCK_UI_APPROVER_TOKEN;
const executablePath = process.env.AIRLOCK_UI_CHROMIUM || "/usr/bin/chromium";

let step = "starting";
// Every page opened, so that a failure can show what each one said.
const pages = [];
function check(condition, what) {
  if (!condition) throw new Error(`${step}: ${what}`);
}

const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
  "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

// axe-core in the page (evaluated over the DevTools protocol, which the
// page's CSP does not govern): no serious or critical violation.
async function accessible(page, what) {
  await page.evaluate(axeSource);
  const result = await page.evaluate(() =>
    // eslint-disable-next-line no-undef
    axe.run(document, { resultTypes: ["violations"] }),
  );
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  check(
    bad.length === 0,
    `axe on ${what}: ${bad.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target).join(", ")}`).join("; ")}`,
  );
}

// Every UI response has the strict headers.
function secured(response, what) {
  const h = response.headers();
  check(h["content-security-policy"] === CSP, `${what} has the CSP (got ${h["content-security-policy"]})`);
  check(h["x-content-type-options"] === "nosniff", `${what} has nosniff`);
  check(h["referrer-policy"] === "no-referrer", `${what} has no-referrer`);
}

async function newPage(browser) {
  const context = await browser.newContext();
  const page = await context.newPage();
  pages.push(page);
  page.setDefaultTimeout(15000);
  // A CSP violation (an inline script or style) is a bug.
  page.on("console", (m) => {
    if (/Content Security Policy/i.test(m.text())) {
      console.error(`CSP violation on ${page.url()}: ${m.text()}`);
      process.exitCode = 1;
    }
  });
  page.on("pageerror", (e) => {
    console.error(`script error on ${page.url()}: ${e}`);
    process.exitCode = 1;
  });
  return page;
}

async function submitRequest(page, reason) {
  const response = await page.goto(`${base}/ui/`);
  secured(response, "the request page");
  await page.selectOption("#entitlement", "db-prod");
  await page.fill("#duration", "1h");
  await page.fill("#reason", reason);
  await Promise.all([page.waitForURL(/\/ui\/requests\/[a-z0-9]+$/), page.click("form.stack button[type=submit]")]);
  return page.url().split("/ui/requests/")[1];
}

const browser = await chromium.launch({
  executablePath,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
});
try {
  step = "the requester signs in with a link";
  const alice = await newPage(browser);
  const login = await alice.goto(`${base}/ui/login#token=${encodeURIComponent(requesterToken)}`);
  secured(login, "the sign-in page");
  await alice.waitForFunction(() => document.getElementById("token").value !== "");
  check(!alice.url().includes("#token"), "the script drops the token from the address bar");
  await accessible(alice, "the sign-in page");
  await Promise.all([alice.waitForURL(`${base}/ui/`), alice.click("button[type=submit]")]);
  await accessible(alice, "the request page");

  step = "the requester submits a request whose reason holds a script";
  const hostile = "<script>window.pwned = 1</script> deploy <b>now</b>";
  const first = await submitRequest(alice, hostile);
  check((await alice.textContent("#state")).includes("pending"), "the new request is pending");
  check((await alice.textContent("dd.reason")) === hostile, "the reason shows as typed, as text");
  check((await alice.evaluate(() => window.pwned)) === undefined, "the reason's script did not run");
  check((await alice.locator("main script, main b").count()) === 0, "the reason made no elements");
  await accessible(alice, "the request page of a pending request");

  step = "a forged post without the CSRF token is refused";
  const forged = await alice.request.post(`${base}/ui/request`, {
    form: { entitlement: "db-prod", reason: "forged" },
    maxRedirects: 0,
  });
  check(forged.status() === 403, `403 for a post without a CSRF token (got ${forged.status()})`);
  check((await forged.text()).includes("CSRF token"), "the page says the CSRF token is missing");
  secured(forged, "the refusal");

  step = "a post from another origin is refused";
  const csrf = await alice.getAttribute("input[name=csrf]", "value");
  const foreign = await alice.request.post(`${base}/ui/request`, {
    form: { csrf, entitlement: "db-prod", reason: "from elsewhere" },
    headers: { Origin: "https://evil.example" },
    maxRedirects: 0,
  });
  check(foreign.status() === 403, `403 for a foreign Origin (got ${foreign.status()})`);
  check((await foreign.text()).includes("another site"), "the page says the post came from another site");

  step = "the approver signs in by pasting their token";
  const bob = await newPage(browser);
  await bob.goto(`${base}/ui/login`);
  await bob.fill("#token", approverToken);
  await Promise.all([bob.waitForURL(`${base}/ui/`), bob.click("button[type=submit]")]);

  step = "the approver sees the request in the inbox and approves it with a comment";
  secured(await bob.goto(`${base}/ui/inbox`), "the inbox");
  await bob.locator(`input[name=id][value="${first}"]`).waitFor();
  check((await bob.locator("td.reason").first().textContent()) === hostile, "the inbox shows the reason as text");
  await accessible(bob, "the inbox");
  // "Select all" is the script's; the one request is all there is.
  await bob.check("#select-all");
  check(await bob.isChecked(`input[name=id][value="${first}"]`), "select all checks the request");
  await bob.fill("#comment", "fine for the deploy");
  await bob.click("text=Approve selected");
  await bob.locator("[role=status]", { hasText: first }).waitFor();
  await accessible(bob, "the inbox after approving");

  step = "the requester sees the grant active with its countdown";
  let active = false;
  for (let i = 0; i < 100 && !active; i++) {
    await alice.goto(`${base}/ui/mine`);
    active = (await alice.locator("time[data-countdown]").count()) > 0;
  }
  check(active, "the grant became active");
  const clock = alice.locator("time[data-countdown]").first();
  const before = await clock.textContent();
  await alice.waitForFunction(
    (was) => document.querySelector("time[data-countdown]").textContent !== was,
    before,
  );
  await accessible(alice, "My access with an active grant");

  step = "the requester releases the grant";
  await Promise.all([alice.waitForURL(`${base}/ui/mine`), alice.click("text=Release db-prod")]);
  await alice.locator("table tr", { hasText: "released" }).waitFor();

  step = "a denial shows its reason";
  const second = await submitRequest(alice, "another look at the database");
  await bob.goto(`${base}/ui/requests/${second}`);
  await accessible(bob, "the request page for its approver");
  await bob.fill("#comment", "not during the freeze");
  await Promise.all([bob.waitForURL(/\/ui\/requests\//), bob.click("button.danger")]);
  await alice.goto(`${base}/ui/requests/${second}`);
  check((await alice.textContent("#state")).includes("denied"), "the request is denied");
  check((await alice.textContent("main")).includes("not during the freeze"), "the denial's reason shows");
  await accessible(alice, "the request page of a denied request");

  step = "the requester signs out";
  await Promise.all([alice.waitForURL(`${base}/ui/login`), alice.click("text=Sign out")]);
  await alice.goto(`${base}/ui/mine`);
  check(alice.url() === `${base}/ui/login`, "signed out, the pages ask to sign in");
  console.log(`web UI: every step passed (requests ${first}, ${second})`);
} catch (e) {
  console.error(`${step}: ${e instanceof Error ? e.message : e}`);
  for (const page of pages) {
    const text = await page.textContent("body").catch(() => "(no page)");
    console.error(`--- ${page.url()}\n${text.replace(/\s+/g, " ").trim()}`);
  }
  process.exitCode = 1;
} finally {
  await browser.close();
}
