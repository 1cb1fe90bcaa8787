// What the browser tests share: Debian's headless Chromium (never a
// browser Playwright downloads), axe-core in the page, the UI's strict
// headers, screenshots on request, and a failure report naming the step
// and what each open page said.

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { chromium } from "playwright-core";

const require = createRequire(import.meta.url);
const axeSource = readFileSync(require.resolve("axe-core/axe.min.js"), "utf8");

// Where to save a screenshot of each page (the README's), if anywhere.
const screenshots = process.env.AIRLOCK_UI_SCREENSHOTS;
const executablePath = process.env.AIRLOCK_UI_CHROMIUM || "/usr/bin/chromium";

// The step under way, named in a failure.
export const progress = { step: "starting" };
// Every page opened, so that a failure can show what each one said.
const pages = [];
export function check(condition, what) {
  if (!condition) throw new Error(`${progress.step}: ${what}`);
}

export const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
  "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

// axe-core in the page (evaluated over the DevTools protocol, which the
// page's CSP does not govern): no serious or critical violation.
export async function accessible(page, what) {
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
export function secured(response, what) {
  const h = response.headers();
  check(h["content-security-policy"] === CSP, `${what} has the CSP (got ${h["content-security-policy"]})`);
  check(h["x-content-type-options"] === "nosniff", `${what} has nosniff`);
  check(h["referrer-policy"] === "no-referrer", `${what} has no-referrer`);
}

// A screenshot of the page as it is, for the README (only when asked).
export async function shot(page, name) {
  if (screenshots) await page.screenshot({ path: `${screenshots}/${name}.png` });
}

export async function newPage(browser) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 700 } });
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

// Runs `steps(browser)` in a fresh headless Chromium; on a failure, says
// which step failed and what each page showed, and exits non-zero.
export async function inBrowser(steps) {
  const browser = await chromium.launch({
    executablePath,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"],
  });
  try {
    await steps(browser);
  } catch (e) {
    console.error(`${progress.step}: ${e instanceof Error ? e.message : e}`);
    for (const page of pages) {
      const text = await page.textContent("body").catch(() => "(no page)");
      console.error(`--- ${page.url()}\n${text.replace(/\s+/g, " ").trim()}`);
    }
    process.exitCode = 1;
  } finally {
    await browser.close();
  }
}
