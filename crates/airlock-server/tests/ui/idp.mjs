// Signing in to Airlock's web UI with the identity provider, in Debian's
// headless Chromium: the provider is tests/oidc/provider.mjs (the real
// oidc-provider), started by tests/ui.rs with the server. Bob, whom only
// the provider knows, follows a link to a page of Airlock, signs in at the
// provider with a second factor, lands back on that page, asks for an
// entitlement that needs recent MFA, keeps his session while its
// 15-second ID token is renewed, and signs out. A callback nobody started
// is refused, and so is one for an older sign-in than the latest.

import { accessible, check, inBrowser, newPage, progress, secured } from "./common.mjs";

const base = process.env.AIRLOCK_UI_URL;

async function sessionCookies(page) {
  // The refresh cookie is the UI's alone (Path=/ui).
  const cookies = await page.context().cookies(`${base}/ui/`);
  const value = (name) => cookies.find((c) => c.name === name)?.value;
  return { session: value("airlock_session"), refresh: value("airlock_refresh"), all: cookies };
}

// The provider's login page (its own form): who, and whether with a
// second factor; it answers with the redirect back to Airlock.
async function signInAtProvider(page, login, mfa) {
  await page.waitForSelector("input[name=login]");
  await page.fill("input[name=login]", login);
  await page.selectOption("select[name=mfa]", mfa ? "yes" : "no");
  await page.click("button");
}

await inBrowser(async (browser) => {
  progress.step = "a link to a page asks bob to sign in, offering the provider";
  const bob = await newPage(browser);
  await bob.goto(`${base}/ui/mine`);
  check(bob.url() === `${base}/ui/login?next=%2Fui%2Fmine`, `at the sign-in page (${bob.url()})`);
  await accessible(bob, "the sign-in page with the provider offered");

  progress.step = "bob signs in at the provider with a second factor and comes back";
  await bob.click("#idp-sign-in");
  await signInAtProvider(bob, "bob", true);
  await bob.waitForURL(`${base}/ui/mine`);
  check((await bob.textContent(".signout span")).trim() === "bob", "the header names bob");
  const first = await sessionCookies(bob);
  check(first.session && first.session.split(".").length === 3, "the session is the ID token");
  check(first.refresh, "the refresh token is kept");
  for (const c of first.all.filter((c) => c.name.startsWith("airlock_"))) {
    check(c.httpOnly, `${c.name} is HttpOnly`);
    check(c.sameSite === "Strict", `${c.name} is SameSite=Strict (got ${c.sameSite})`);
  }
  check(!first.all.some((c) => c.name === "airlock_signin"), "the sign-in's own cookie is gone");

  progress.step = "bob asks for an entitlement that needs MFA within the hour";
  const asked = await bob.goto(`${base}/ui/`);
  secured(asked, "the request page");
  await bob.selectOption("#entitlement", "db-prod");
  await bob.fill("#duration", "1h");
  await bob.fill("#reason", "signed in with the provider");
  await Promise.all([
    bob.waitForURL(/\/ui\/requests\/[a-z0-9]+$/),
    bob.click("form.stack button[type=submit]"),
  ]);
  check((await bob.textContent("main")).includes("signed in with the provider"), "the request page shows his reason");

  progress.step = "bob's session outlives its ID token: it is renewed on the way";
  let renewed = first;
  // Page after page until the provider's 15-second ID token is due (a
  // few hundred loads at most; no renewal happens before it is due).
  for (let i = 0; i < 5000 && renewed.session === first.session; i++) {
    const page = await bob.goto(`${base}/ui/mine`);
    check(page.url() === `${base}/ui/mine`, `still signed in (at ${page.url()})`);
    renewed = await sessionCookies(bob);
  }
  check(renewed.session !== first.session, "a new ID token replaced the first");
  check((await bob.textContent(".signout span")).trim() === "bob", "still bob");

  progress.step = "bob signs out: the cookies go, the pages ask to sign in";
  await Promise.all([bob.waitForURL(`${base}/ui/login`), bob.click("text=Sign out")]);
  const after = await sessionCookies(bob);
  check(!after.session && !after.refresh, "no session or refresh cookie left");
  await bob.goto(`${base}/ui/mine`);
  check(bob.url().startsWith(`${base}/ui/login`), "signed out");

  progress.step = "a callback no sign-in started is refused";
  const stray = await bob.goto(`${base}/ui/oidc/callback?code=stolen&state=guess`);
  check(stray.status() === 400, `400 (got ${stray.status()})`);
  check((await bob.textContent(".error")).includes("not started here"), "it says so");

  progress.step = "a sign-in finished in an older tab than the latest one started is refused";
  const eve = await newPage(browser);
  await eve.goto(`${base}/ui/oidc/start`);
  await eve.waitForSelector("input[name=login]");
  // A second sign-in in the same browser replaces the first one's state.
  const later = await eve.context().newPage();
  await later.goto(`${base}/ui/oidc/start`);
  await later.waitForSelector("input[name=login]");
  await signInAtProvider(eve, "alice", false);
  await eve.waitForSelector(".error");
  check(eve.url().startsWith(`${base}/ui/oidc/callback?`), `back at the callback (${eve.url()})`);
  check((await eve.textContent(".error")).includes("state differs"), "it names the state");
  check(!(await sessionCookies(eve)).session, "no session was made");

  console.log("web UI sign-in with the identity provider: every step passed");
});
