// Cross-origin fetches from real pages in headless Chromium
// (crates/serin/tests/e2e/cors.rs starts serin, the demo auth service and
// an upstream, then runs this):
//
//   node cors.mjs API_URL
//
// Two pages, http://allowed.test/ and http://denied.test/, are served by a
// server of this script on 127.0.0.1 (Chromium resolves both names there,
// so the pages are in the loopback address space as the API is, and
// Private Network Access has nothing to refuse). Each makes a credentialed fetch with an
// Authorization header — which makes the browser send a preflight first —
// to API_URL. Prints one JSON object of findings on stdout for the Rust
// test to judge.

import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [api] = process.argv.slice(2);
if (!api) {
  console.error("usage: node cors.mjs API_URL");
  process.exit(2);
}

const PAGE = "<!doctype html><title>cors page</title><p>cross-origin fetch</p>";

/** Runs a credentialed PUT from the page; what the page could see. */
function call(url) {
  return fetch(url, {
    method: "PUT",
    credentials: "include",
    headers: { authorization: "Bearer good-token", "x-client": "page" },
  }).then(
    async (r) => ({
      ok: true,
      status: r.status,
      upstream: r.headers.get("x-upstream"),
      body: await r.text(),
    }),
    (e) => ({ ok: false, error: String(e) }),
  );
}

const profile = mkdtempSync(join(tmpdir(), "serin-chromium-"));
const result = { console_errors: [] };
const pages = createServer((_, res) => {
  res.writeHead(200, { "content-type": "text/html" });
  res.end(PAGE);
});
await new Promise((ok) => pages.listen(0, "127.0.0.1", ok));
const port = pages.address().port;
let context;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      `--host-resolver-rules=MAP allowed.test 127.0.0.1:${port}, MAP denied.test 127.0.0.1:${port}`,
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error") result.console_errors.push(m.text());
  });
  for (const origin of ["allowed", "denied"]) {
    await page.goto(`http://${origin}.test/`, { waitUntil: "load" });
    result[origin] = await page.evaluate(call, api);
  }
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
  pages.close();
}
console.log(JSON.stringify(result));
