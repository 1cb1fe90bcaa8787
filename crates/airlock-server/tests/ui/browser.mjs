// Drives Airlock's web UI in Debian's headless Chromium (never a browser
// Playwright downloads) and runs axe-core on every page. Started by
// tests/ui.rs with the server's URL and the users' tokens in the
// environment; exits non-zero, saying which step failed, on any failure.
// Every wait is for an event (Playwright's auto-waiting, a condition in the
// page), bounded by Playwright's timeouts.

import { accessible, check, inBrowser, newPage, progress, secured, shot } from "./common.mjs";

const base = process.env.AIRLOCK_UI_URL;
const requesterToken = process.env.AIRLOCK_UI_REQUESTER_TOKEN;
const approverToken = process.env.AIRLOCK_UI_APPROVER_TOKEN;
const adminToken = process.env.AIRLOCK_UI_ADMIN_TOKEN;
// An API token that asked for staff-portal: the audit log finds it by token.
const botTokenId = process.env.AIRLOCK_UI_BOT_TOKEN_ID;
// erin's SSH certificate grant: the one holder a connector lists.
const sshGrant = process.env.AIRLOCK_UI_SSH_GRANT;

async function signIn(browser, token) {
  const page = await newPage(browser);
  await page.goto(`${base}/ui/login`);
  await page.fill("#token", token);
  await Promise.all([page.waitForURL(`${base}/ui/`), page.click("button[type=submit]")]);
  return page;
}

// Reloads `url` until `ready` holds in the page (work the server finishes
// in the background: a grant provisioned, a revocation confirmed).
async function reloadUntil(page, url, ready) {
  for (let i = 0; i < 100; i++) {
    await page.goto(url);
    if (await ready()) return true;
  }
  return false;
}

// The ids of a page's table rows (`grant-…`) or the numbers in its first
// column (the audit log's seqs).
const rowIds = (page) => page.locator("tbody tr").evaluateAll((rows) => rows.map((r) => r.id));
const firstCells = async (page) =>
  (await page.locator("tbody tr td:first-child").allTextContents()).map((t) => Number(t.trim()));
const actionCells = async (page) => (await page.locator("td.action").allTextContents()).map((a) => a.trim());

async function submitRequest(page, reason, { breakGlass = false } = {}) {
  const response = await page.goto(`${base}/ui/`);
  secured(response, "the request page");
  await page.selectOption("#entitlement", "db-prod");
  await page.fill("#duration", breakGlass ? "30m" : "1h");
  await page.fill("#reason", reason);
  if (breakGlass) await page.check("#break_glass");
  await Promise.all([page.waitForURL(/\/ui\/requests\/[a-z0-9]+$/), page.click("form.stack button[type=submit]")]);
  return page.url().split("/ui/requests/")[1];
}

await inBrowser(async (browser) => {
  progress.step = "the requester signs in with a link";
  const alice = await newPage(browser);
  const login = await alice.goto(`${base}/ui/login#token=${encodeURIComponent(requesterToken)}`);
  secured(login, "the sign-in page");
  await alice.waitForFunction(() => document.getElementById("token").value !== "");
  check(!alice.url().includes("#token"), "the script drops the token from the address bar");
  await accessible(alice, "the sign-in page");
  await Promise.all([alice.waitForURL(`${base}/ui/`), alice.click("button[type=submit]")]);
  await accessible(alice, "the request page");
  await shot(alice, "ask");

  progress.step = "the requester searches what they may request";
  const search = async (q) => {
    await alice.fill("#q", q);
    await Promise.all([alice.waitForURL(`${base}/ui/?q=${encodeURIComponent(q)}`), alice.click("form.search button")]);
    return (await alice.locator(".cards h3").allTextContents()).map((t) => t.trim()).join();
  };
  let found = await search("LDAP");
  check(found === "staff-portal", `the target matches, in any case (got ${found})`);
  check((await alice.textContent("#matches")).includes("1 of 3 entitlements match"), "the page says how many match");
  const offered = (await alice.locator("#entitlement option").allTextContents()).map((o) => o.trim()).join();
  check(offered === "staff-portal", `the form offers the match (got ${offered})`);
  await accessible(alice, "the request page with a search");
  found = await search("wiki");
  check(found === "wiki-edit", `the name and description match (got ${found})`);
  found = await search("PRODUCTION");
  check(found === "db-prod", `the description matches, in any case (got ${found})`);
  found = await search("mainframe");
  check(found === "", `nothing matches (got ${found})`);
  check(
    (await alice.textContent("#matches")).includes("No entitlement matches mainframe"),
    "the page says no entitlement matches",
  );
  check((await alice.locator("#entitlement").count()) === 0, "no form without a match");
  await accessible(alice, "the request page when nothing matches");

  progress.step = "an unknown page is a 404 page, with the menu when signed in";
  const missing = await alice.goto(`${base}/ui/no/such/page`);
  check(missing.status() === 404, `404 for an unknown page (got ${missing.status()})`);
  secured(missing, "the 404 page");
  check((await alice.textContent("h1")).includes("404"), "the page says 404");
  check((await alice.textContent("main")).includes("/ui/no/such/page"), "the page names the address");
  check((await alice.locator('nav a[href="/ui/mine"]').count()) === 1, "the signed-in menu shows");
  await accessible(alice, "the 404 page");
  const noRequest = await alice.goto(`${base}/ui/requests/nosuchrequest`);
  check(noRequest.status() === 404, `404 for an unknown request (got ${noRequest.status()})`);
  check((await alice.textContent("main")).includes("no request `nosuchrequest`"), "the page says which request");
  check((await alice.locator('nav a[href="/ui/mine"]').count()) === 1, "the menu shows for an unknown request");
  await accessible(alice, "the 404 page of an unknown request");
  const stranger = await newPage(browser);
  const signedOut = await stranger.goto(`${base}/ui/nowhere`);
  check(signedOut.status() === 404, `404 for an unknown page, signed out (got ${signedOut.status()})`);
  secured(signedOut, "the 404 page signed out");
  check((await stranger.locator("nav").count()) === 0, "no menu without a session");
  await accessible(stranger, "the 404 page signed out");
  const api = await stranger.request.get(`${base}/v1/nowhere`);
  check(api.status() === 404, `/v1 answers 404 (got ${api.status()})`);
  check(api.headers()["content-type"].startsWith("application/json"), "/v1's 404 is JSON");
  check((await api.json()).error.code === "not_found", "/v1's 404 is its JSON error");

  progress.step = "the requester submits a request whose reason holds a script";
  const hostile = "<script>window.pwned = 1</script> deploy <b>now</b>";
  const first = await submitRequest(alice, hostile);
  check((await alice.textContent("#state")).includes("pending"), "the new request is pending");
  check((await alice.textContent("dd.reason")) === hostile, "the reason shows as typed, as text");
  check((await alice.evaluate(() => window.pwned)) === undefined, "the reason's script did not run");
  check((await alice.locator("main script, main b").count()) === 0, "the reason made no elements");
  await accessible(alice, "the request page of a pending request");

  progress.step = "a forged post without the CSRF token is refused";
  const forged = await alice.request.post(`${base}/ui/request`, {
    form: { entitlement: "db-prod", reason: "forged" },
    maxRedirects: 0,
  });
  check(forged.status() === 403, `403 for a post without a CSRF token (got ${forged.status()})`);
  check((await forged.text()).includes("CSRF token"), "the page says the CSRF token is missing");
  secured(forged, "the refusal");

  progress.step = "a post from another origin is refused";
  const csrf = await alice.getAttribute("input[name=csrf]", "value");
  const foreign = await alice.request.post(`${base}/ui/request`, {
    form: { csrf, entitlement: "db-prod", reason: "from elsewhere" },
    headers: { Origin: "https://evil.example" },
    maxRedirects: 0,
  });
  check(foreign.status() === 403, `403 for a foreign Origin (got ${foreign.status()})`);
  check((await foreign.text()).includes("another site"), "the page says the post came from another site");

  progress.step = "the approver signs in by pasting their token";
  const bob = await signIn(browser, approverToken);

  progress.step = "the approver sees the request in the inbox and approves it with a comment";
  secured(await bob.goto(`${base}/ui/inbox`), "the inbox");
  await bob.locator(`input[name=id][value="${first}"]`).waitFor();
  check((await bob.locator("td.reason").first().textContent()) === hostile, "the inbox shows the reason as text");
  await accessible(bob, "the inbox");
  await shot(bob, "inbox");
  // "Select all" is the script's; the one request is all there is.
  await bob.check("#select-all");
  check(await bob.isChecked(`input[name=id][value="${first}"]`), "select all checks the request");
  await bob.fill("#comment", "fine for the deploy");
  await bob.click("text=Approve selected");
  await bob.locator("[role=status]", { hasText: first }).waitFor();
  await accessible(bob, "the inbox after approving");

  progress.step = "the requester sees the grant active with its countdown";
  const active = await reloadUntil(
    alice,
    `${base}/ui/mine`,
    async () => (await alice.locator("time[data-countdown]").count()) > 0,
  );
  check(active, "the grant became active");
  const clock = alice.locator("time[data-countdown]").first();
  const before = await clock.textContent();
  await alice.waitForFunction(
    (was) => document.querySelector("time[data-countdown]").textContent !== was,
    before,
  );
  await accessible(alice, "My access with an active grant");
  await shot(alice, "mine");

  progress.step = "the requester releases the grant";
  await Promise.all([alice.waitForURL(`${base}/ui/mine`), alice.click("text=Release db-prod")]);
  await alice.locator("table tr", { hasText: "released" }).waitFor();

  progress.step = "a denial shows its reason";
  const second = await submitRequest(alice, "another look at the database");
  await bob.goto(`${base}/ui/requests/${second}`);
  await accessible(bob, "the request page for its approver");
  await bob.fill("#comment", "not during the freeze");
  await Promise.all([bob.waitForURL(/\/ui\/requests\//), bob.click("button.danger")]);
  await alice.goto(`${base}/ui/requests/${second}`);
  check((await alice.textContent("#state")).includes("denied"), "the request is denied");
  check((await alice.textContent("main")).includes("not during the freeze"), "the denial's reason shows");
  await accessible(alice, "the request page of a denied request");
  await shot(alice, "request");

  progress.step = "an admin signs in; the requester breaks the glass";
  const carol = await signIn(browser, adminToken);
  const glass = await submitRequest(alice, "the primary is down", { breakGlass: true });

  progress.step = "the admin sees the break-glass grant on the grants page";
  const held = await reloadUntil(
    carol,
    `${base}/ui/grants?break_glass=1`,
    async () => (await carol.locator(`#grant-${glass} time[data-countdown]`).count()) > 0,
  );
  check(held, "the break-glass grant shows with its time left");
  secured(await carol.goto(`${base}/ui/grants`), "the grants page");
  check((await carol.textContent(`#grant-${glass}`)).includes("break glass"), "the grant is marked break glass");
  await accessible(carol, "the grants page");
  await shot(carol, "grants");

  progress.step = "the grants page pages with the API's cursor, its limit kept";
  secured(await carol.goto(`${base}/ui/grants?limit=2`), "a page of grants");
  const seen = await rowIds(carol);
  check(seen.length === 2, `two grants on a page of two (got ${seen})`);
  check((await carol.textContent("#cut")).includes("cut after 2 grants"), "the page says the list was cut");
  await accessible(carol, "a page of grants cut short");
  while ((await carol.locator("#next-page").count()) > 0) {
    await Promise.all([carol.waitForURL(/cursor=/), carol.click("#next-page")]);
    check(new URL(carol.url()).searchParams.get("limit") === "2", "the next page keeps the limit");
    check((await carol.locator("#newest-page").count()) === 1, "a later page links back to the newest");
    seen.push(...(await rowIds(carol)));
  }
  check(seen.length >= 4 && new Set(seen).size === seen.length, `every grant once (got ${seen})`);
  check(seen.includes(`grant-${glass}`), "the break-glass grant is on one of the pages");
  await accessible(carol, "the last page of grants");

  progress.step = "the reviewer sees the use awaiting review and judges it";
  secured(await carol.goto(`${base}/ui/reviews`), "the reviews page");
  check((await carol.textContent("#reviews-count")).includes("1"), "the nav counts one use awaiting review");
  await accessible(carol, "the reviews page");
  await shot(carol, "reviews");
  const use = carol.locator(`#use-${glass}`);
  await use.locator("input[value=unacceptable]").check();
  await use.locator("textarea[name=comment]").fill("no incident on record");
  await use.locator("button[type=submit]").click();
  await carol.locator(`#use-${glass}`).waitFor({ state: "detached" });
  check((await carol.locator("#reviews-count").count()) === 0, "nothing awaits review any more");
  await carol.goto(`${base}/ui/reviews?all=1`);
  check(
    (await carol.textContent(`#use-${glass} .verdict-text`)).includes("unacceptable"),
    "the reviewed use shows its verdict",
  );
  await accessible(carol, "the reviews page with reviewed uses");

  progress.step = "a forged revoke without the CSRF token is refused";
  const forgedRevoke = await carol.request.post(`${base}/ui/requests/${glass}/revoke`, {
    form: { reason: "forged" },
    maxRedirects: 0,
  });
  check(forgedRevoke.status() === 403, `403 for a revoke without a CSRF token (got ${forgedRevoke.status()})`);

  progress.step = "the admin revokes the grant with a reason";
  await carol.goto(`${base}/ui/grants`);
  await carol.fill(`#revoke-${glass}`, "the incident is over");
  await Promise.all([carol.waitForURL(`${base}/ui/grants`), carol.click(`#grant-${glass} button.danger`)]);
  const gone = await reloadUntil(
    carol,
    `${base}/ui/grants`,
    async () => (await carol.locator(`#grant-${glass}`).count()) === 0,
  );
  check(gone, "the revoked grant leaves the grants page");
  await alice.goto(`${base}/ui/requests/${glass}`);
  check((await alice.textContent("#state")).includes("revoked"), "the requester sees the grant revoked");
  check((await alice.textContent("main")).includes("the incident is over"), "and the admin's reason");

  progress.step = "the audit log filters by request, under the chain's status";
  secured(await carol.goto(`${base}/ui/audit`), "the audit page");
  check((await carol.textContent("#chain")).includes("The chain holds"), "the chain's status shows it holds");
  await carol.fill("#f-request", glass);
  await Promise.all([carol.waitForURL(/\/ui\/audit\?/), carol.click("form.filters button")]);
  const actions = (await carol.locator("td.action").allTextContents()).map((a) => a.trim());
  check(actions.includes("reviewed") && actions.includes("revoked"), `the request's events (got ${actions})`);
  const others = await carol.locator(`tbody tr:not(:has(a[href="/ui/requests/${glass}"]))`).count();
  check(others === 0, `only the request's events show (${others} others)`);
  check((await carol.textContent("main")).includes("no incident on record"), "an event's details show");
  await accessible(carol, "the audit page");
  await shot(carol, "audit");

  progress.step = "the audit log filters by action and pages past 200 events, the filter kept";
  await carol.goto(`${base}/ui/audit`);
  await carol.selectOption("#f-action", "token_created");
  await Promise.all([carol.waitForURL(/action=token_created/), carol.click("form.filters button")]);
  let shown = await actionCells(carol);
  check(shown.length === 200 && shown.every((a) => a === "token_created"), `200 token_created events (got ${shown.length})`);
  check((await carol.textContent("#cut")).includes("cut after 200 events"), "the page says the log was cut");
  const newer = await firstCells(carol);
  await accessible(carol, "the audit page filtered by action, cut");
  await Promise.all([carol.waitForURL(/cursor=/), carol.click("#next-page")]);
  check(new URL(carol.url()).searchParams.get("action") === "token_created", "the next page keeps the action");
  check((await carol.inputValue("#f-action")) === "token_created", "the filter form shows the action");
  shown = await actionCells(carol);
  check(shown.length > 0 && shown.every((a) => a === "token_created"), `older token_created events (got ${shown})`);
  const older = await firstCells(carol);
  check(Math.max(...older) < Math.min(...newer), "the next page holds older events");
  check(newer.length + older.length > 205, `every token's creation on the two pages (${newer.length + older.length})`);
  check((await carol.locator("#next-page").count()) === 0, "the last page has no next page");
  await accessible(carol, "the second page of the audit log");

  progress.step = "the audit log filters by API token";
  await carol.goto(`${base}/ui/audit`);
  await carol.fill("#f-token", botTokenId);
  await Promise.all([carol.waitForURL(/token=/), carol.click("form.filters button")]);
  const byToken = await actionCells(carol);
  check(byToken.includes("requested"), `the token's request (got ${byToken})`);
  const actors = await carol.locator("tbody tr td:nth-child(3)").allTextContents();
  check(actors.every((a) => a.includes(botTokenId)), `only what the token did (got ${actors})`);
  await accessible(carol, "the audit page filtered by token");
  const bogus = await carol.goto(`${base}/ui/audit?action=bogus`);
  check(bogus.status() === 400, `400 for an unknown action (got ${bogus.status()})`);
  check((await carol.textContent("main")).includes("not an audit action"), "the page says the action is unknown");

  progress.step = "the policies page shows the set in force and a proposal, which a second admin approves";
  secured(await carol.goto(`${base}/ui/policies`), "the policies page");
  const inForce = (await carol.textContent("#policy-version")).trim();
  check(inForce !== "", "the version in force shows");
  const proposal = carol.locator(".proposal").first();
  check((await proposal.textContent()).includes("`bob` gains request on `db-prod`"), "the proposal says what it changes");
  await accessible(carol, "the policies page");
  await shot(carol, "policies");
  await proposal.locator("button[type=submit]").click();
  await carol.locator("[role=status]", { hasText: "is in force" }).waitFor();
  check((await carol.textContent("#policy-version")).trim() !== inForce, "the approved set is in force");
  check((await carol.locator(".proposal").count()) === 0, "no proposal waits any more");
  await accessible(carol, "the policies page after approving");

  progress.step = "the standing page lists who holds each target's access, by status, and as CSV";
  await carol.goto(`${base}/ui/audit`);
  await Promise.all([carol.waitForURL(`${base}/ui/standing`), carol.click('nav a[href="/ui/standing"]')]);
  secured(await carol.goto(`${base}/ui/standing`), "the standing page");
  const connectors = await carol.textContent("#connectors");
  check(connectors.includes("ssh: 1 holder(s)"), `the SSH CA lists one holder (got ${connectors})`);
  check(connectors.includes("log: skipped"), `a connector that cannot list holders is said to be skipped (got ${connectors})`);
  const holder = carol.locator(`#standing tbody tr:has(a[href="/ui/requests/${sshGrant}"])`);
  check((await holder.count()) === 1, "erin's certificate is a holder, linked to its request");
  const cells = (await holder.locator("td").allTextContents()).map((c) => c.replace(/\s+/g, " ").trim());
  check(cells[0].includes("erin (person)"), `the holder is erin, a person (got ${cells[0]})`);
  check(cells[1] === "ssh" && cells[2].startsWith("web-ssh"), `the system and entitlement (got ${cells})`);
  check(cells[3] === "granted" && cells[4].includes("until"), `granted, until its expiry (got ${cells})`);
  check(cells[5] === "medium" && cells[6] === "web-ssh: auto", `the risk and approval route (got ${cells})`);
  await accessible(carol, "the standing page");
  await shot(carol, "standing");
  await carol.selectOption("#f-status", "standing");
  await Promise.all([carol.waitForURL(/status=standing/), carol.click("form.filters button")]);
  check((await carol.locator("#standing").count()) === 0, "no standing holder");
  check((await carol.textContent("main")).includes("No holder is standing"), "the page says none is standing");
  check((await carol.getAttribute("#standing-csv", "href")) === "/ui/standing.csv?status=standing", "the CSV keeps the filter");
  await accessible(carol, "the standing page filtered by status");
  const csv = await carol.request.get(`${base}/ui/standing.csv`);
  check(csv.status() === 200, `the CSV downloads (got ${csv.status()})`);
  check(csv.headers()["content-type"] === "text/csv; charset=utf-8", `as CSV (got ${csv.headers()["content-type"]})`);
  check(/^attachment; filename="airlock-standing\.csv"$/.test(csv.headers()["content-disposition"]), "as a download");
  const csvLines = (await csv.text()).trim().split("\n");
  check(
    csvLines[0] === "risk,status,connector,principal,user,kind,entitlements,sensitivity,request,since,until,approval",
    `the CLI's columns (got ${csvLines[0]})`,
  );
  check(
    csvLines.length === 2 && csvLines[1].startsWith(`medium,granted,ssh,${sshGrant},erin,person,web-ssh,high,${sshGrant},`),
    `one holder (got ${csvLines})`,
  );
  const none = (await (await carol.request.get(`${base}/ui/standing.csv?status=lingering`)).text()).trim().split("\n");
  check(none.length === 1, `the filter applies to the CSV (got ${none})`);
  const badStatus = await carol.goto(`${base}/ui/standing?status=bogus`);
  check(badStatus.status() === 400, `400 for an unknown status (got ${badStatus.status()})`);
  check((await carol.textContent("main")).includes("must be one of granted"), "the page says which statuses there are");

  progress.step = "the SSH grant's page shows the login sshd logged on its timeline";
  secured(await carol.goto(`${base}/ui/requests/${sshGrant}`), "the SSH grant's page");
  const timeline = (await carol.textContent("ol.history")).replace(/\s+/g, " ");
  check(
    timeline.includes("ssh login as web-admin from 192.0.2.7 port 50022 on web1 (certificate serial 7)"),
    `the login is on the timeline, in words (got ${timeline})`,
  );

  progress.step = "a non-admin gets 403 on the admin pages";
  check((await bob.locator('nav a[href="/ui/grants"]').count()) === 0, "no admin links for a non-admin");
  check((await bob.locator('nav a[href="/ui/standing"]').count()) === 0, "no standing link for a non-admin");
  for (const path of ["grants", "audit", "policies", "standing", "standing.csv"]) {
    const refused = await bob.goto(`${base}/ui/${path}`);
    check(refused.status() === 403, `403 on /ui/${path} (got ${refused.status()})`);
  }
  await accessible(bob, "a refusal");

  progress.step = "an admin starts an access review from the access reviews page";
  secured(await carol.goto(`${base}/ui/access-reviews`), "the access reviews page");
  check((await carol.locator('nav a[href="/ui/access-reviews"]').count()) === 1, "the menu offers access reviews to an admin");
  check((await carol.textContent("#open + p")).includes("No open campaign"), "no campaign yet");
  await accessible(carol, "the access reviews page before any campaign");
  await Promise.all([
    carol.waitForURL(/\/ui\/access-reviews\/ar_[^/?]+$/),
    carol.click("#template-quarterly button[type=submit]"),
  ]);
  const campaign = carol.url().split("/ui/access-reviews/")[1];
  check((await carol.textContent("#campaign")).includes("by carol"), "the new campaign names who started it");
  check((await carol.locator("form.decide").count()) === 0, "an admin outside the reviewer groups decides nothing");
  await carol.goto(`${base}/ui/access-reviews`);
  check(/\d+ of \d+/.test(await carol.textContent(`#campaign-${campaign}`)), "the list shows its open and total items");
  await accessible(carol, "the access reviews page with an open campaign");
  await shot(carol, "access-reviews");

  progress.step = "the reviewer follows the menu, which counts the items they may decide, to the campaign";
  await bob.goto(`${base}/ui/`);
  const toDecide = Number((await bob.textContent("#access-reviews-count")).match(/\d+/)[0]);
  await Promise.all([bob.waitForURL(`${base}/ui/access-reviews`), bob.click('nav a[href="/ui/access-reviews"]')]);
  check((await bob.locator("#template-quarterly").count()) === 0, "only admins get the forms that start a campaign");
  await accessible(bob, "the access reviews page for a reviewer");
  await Promise.all([bob.waitForURL(`${base}/ui/access-reviews/${campaign}`), bob.click(`#campaign-${campaign} a`)]);
  const forms = await bob.locator("form.decide").count();
  check(forms >= 2 && forms === toDecide, `the menu counts the items the reviewer may decide (${toDecide}; ${forms} forms)`);
  const rowOf = (user, entitlement) =>
    bob
      .locator("tbody tr", { hasText: entitlement })
      .filter({ has: bob.locator("td.who", { hasText: new RegExp(`^${user}$`) }) });
  const own = rowOf("bob", "db-prod");
  check((await own.count()) === 1, "the campaign reviews the reviewer's own eligibility");
  check((await own.locator("form").count()) === 0, "but offers them no form for it");
  await accessible(bob, "the campaign page");
  await shot(bob, "access-review");

  progress.step = "the reviewer removes an item among the open ones: without a comment the error shows beside its form";
  await Promise.all([bob.waitForURL(`${base}/ui/access-reviews/${campaign}?open=1`), bob.click("#open-only")]);
  const removedId = await rowOf("grace", "staff-portal").getAttribute("id");
  const [refused] = await Promise.all([
    bob.waitForResponse((r) => r.request().method() === "POST" && r.url().includes("/items/")),
    bob.click(`#${removedId} button[value=remove]`),
  ]);
  check(refused.status() === 400, `400 for a removal without a comment (got ${refused.status()})`);
  const complaint = await bob.textContent(`#${removedId} [role=alert]`);
  check(complaint.includes("comment") && complaint.includes("needs a comment"), `the error names the field (got ${complaint})`);
  check((await bob.locator("#every-item").count()) === 1, "the page keeps the open-items filter");
  await accessible(bob, "the campaign page with an error beside a form");
  await bob.fill(`#${removedId} textarea`, "grace moved to the data team");
  await Promise.all([
    bob.waitForURL(`${base}/ui/access-reviews/${campaign}?open=1`),
    bob.click(`#${removedId} button[value=remove]`),
  ]);
  check((await bob.locator(`#${removedId}`).count()) === 0, "the removed item leaves the open items");

  progress.step = "the reviewer confirms another item";
  const confirmedId = await rowOf("erin", "staff-portal").getAttribute("id");
  await bob.fill(`#${confirmedId} textarea`, "still runs the portal");
  await Promise.all([
    bob.waitForURL(`${base}/ui/access-reviews/${campaign}?open=1`),
    bob.click(`#${confirmedId} button[value=confirm]`),
  ]);
  check((await bob.locator(`#${confirmedId}`).count()) === 0, "the confirmed item leaves the open items");
  const left = Number((await bob.textContent("#access-reviews-count")).match(/\d+/)[0]);
  check(left === toDecide - 2, `the menu counts two fewer (${toDecide} then ${left})`);
  await accessible(bob, "the campaign page, open items only");

  progress.step = "every item shows the decisions with their reviewer, comment and place in the chain";
  await bob.goto(`${base}/ui/access-reviews/${campaign}`);
  const removed = await bob.textContent(`#${removedId} td.decision`);
  check(/remove by bob at .*grace moved to the data team/.test(removed), `the removal shows (got ${removed})`);
  const confirmed = await bob.textContent(`#${confirmedId} td.decision`);
  check(/confirm by bob at .*still runs the portal/.test(confirmed), `the confirmation shows (got ${confirmed})`);
  for (const id of [removedId, confirmedId]) {
    check(/seq \d+/.test(await bob.textContent(`#${id} td.seq`)), `${id} shows its place in the audit chain`);
  }
  await accessible(bob, "the campaign page with decided items");

  progress.step = "a forged decision without the CSRF token is refused";
  const forgedDecision = await bob.request.post(`${base}/ui/access-reviews/${campaign}/items/1`, {
    form: { decision: "confirm" },
    maxRedirects: 0,
  });
  check(forgedDecision.status() === 403, `403 for a decision without a CSRF token (got ${forgedDecision.status()})`);

  progress.step = "someone outside the campaign gets the 404 page for it";
  await alice.goto(`${base}/ui/`);
  check((await alice.locator('nav a[href="/ui/access-reviews"]').count()) === 0, "the menu offers no access reviews to a non-reviewer");
  const hidden = await alice.goto(`${base}/ui/access-reviews/${campaign}`);
  check(hidden.status() === 404, `404 for a campaign one may not see (got ${hidden.status()})`);
  check((await alice.textContent("main")).includes(`no access review \`${campaign}\``), "the page names the campaign");
  check((await alice.locator('nav a[href="/ui/mine"]').count()) === 1, "the menu shows on the 404 page");
  await accessible(alice, "the 404 page of a campaign one may not see");

  progress.step = "the requester signs out";
  await Promise.all([alice.waitForURL(`${base}/ui/login`), alice.click("text=Sign out")]);
  await alice.goto(`${base}/ui/mine`);
  check(
    alice.url() === `${base}/ui/login?next=%2Fui%2Fmine`,
    `signed out, the pages ask to sign in and come back afterwards (at ${alice.url()})`,
  );
  console.log(`web UI: every step passed (requests ${first}, ${second}, ${glass}; access review ${campaign})`);
});
