// Drives serin's dashboard in headless Chromium (crates/serin/tests/e2e/
// dashboard.rs starts `serin up` and the traffic, then runs this):
//
//   node dashboard.mjs qotm|mesh ADMIN_URL ARTIFACT_DIR
//
// `qotm` (examples/qotm): reads what the page shows, changes a weight and
// starts a canary over the admin API, and watches the page follow. `mesh`
// (examples/mesh): reads the sidecar routes and the mesh graph. Either saves
// screenshots and prints one JSON object of findings on stdout for the Rust
// test to judge.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [mode, admin, artifacts] = process.argv.slice(2);
if (!["qotm", "mesh"].includes(mode) || !admin || !artifacts) {
  console.error("usage: node dashboard.mjs qotm|mesh ADMIN_URL ARTIFACT_DIR");
  process.exit(2);
}

// Long enough for a sample or two; the Rust test bounds the whole run.
const WAIT = 20000;

async function adminCall(method, path, body) {
  const resp = await fetch(admin + path, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  if (!resp.ok) throw new Error(`${method} ${path}: ${resp.status} ${text}`);
  return JSON.parse(text);
}

/** Saves a screenshot as ARTIFACT_DIR/FILE and notes its path. */
async function shot(page, name, file, fullPage = false) {
  result.screenshots[name] = join(artifacts, file);
  await page.screenshot({ path: result.screenshots[name], fullPage });
}

const text = (page, testid) =>
  page.locator(`[data-testid="${testid}"]`).first().innerText({ timeout: WAIT });

const profile = mkdtempSync(join(tmpdir(), "serin-chromium-"));
const result = { screenshots: {}, console_errors: [] };
let context;
try {
  // Without the background-networking flags Chromium keeps trying to reach
  // Google's services, which this closed network never answers.
  context = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1366, height: 768 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on("console", (m) => {
    if (m.type() === "error") result.console_errors.push(m.text());
  });
  page.on("pageerror", (e) => result.console_errors.push(String(e)));

  await page.goto(admin + "/ui", { waitUntil: "load" });
  await page.waitForFunction(
    () => document.querySelector("#connection")?.dataset.state === "live",
    null,
    { timeout: WAIT },
  );
  if (mode === "qotm") await qotm(page);
  else await mesh(page);
  result.scroll_width = await page.evaluate(() => document.documentElement.scrollWidth);
} catch (e) {
  result.error = String(e && e.stack ? e.stack : e);
} finally {
  if (context) await context.close();
  rmSync(profile, { recursive: true, force: true });
}
console.log(JSON.stringify(result));

async function mesh(page) {
  result.title = await page.title();
  result.connection = await page.locator("#connection").innerText();
  await page.locator('[data-testid="row-frontend_pinger-v2"]').waitFor({ timeout: WAIT });
  result.routes = await page.locator("#routes article h3").allInnerTexts();
  result.kinds = await page.locator("#routes article .kind").allInnerTexts();
  // Both hops of the frontend carry traffic in the last second's sample.
  await page.waitForFunction(
    () => {
      const items = [...document.querySelectorAll("#mesh li")].map((li) => li.textContent);
      const busy = (from, to) =>
        items.some((t) => t.startsWith(from + " calls " + to + ", ") && !t.includes(" 0.0 requests"));
      return busy("frontend", "pinger") && busy("frontend", "details") && busy("gateway", "frontend");
    },
    null,
    { timeout: WAIT },
  );
  result.mesh = await page.locator("#mesh li").allInnerTexts();
  result.mesh_nodes = await page.locator("#mesh svg g.node text").allTextContents();
  await shot(page, "mesh", "1-mesh.png");
  await shot(page, "full", "2-full-page.png", true);
}

async function qotm(page) {
  await page.locator('[data-testid="row-qotm-v1"]').waitFor({ timeout: WAIT });
  result.title = await page.title();
  result.connection = await page.locator("#connection").innerText();
  result.routes = await page.locator("#routes article h3").allInnerTexts();
  result.versions = await page
    .locator('[data-route="qotm"] table.now tbody th')
    .allInnerTexts();
  result.charts = await page.locator('[data-route="qotm"] .chart canvas').count();
  result.chart_labels = await page
    .locator('[data-route="qotm"] .chart')
    .evaluateAll((els) => els.map((e) => e.getAttribute("aria-label")));
  result.weights_before = await text(page, "weights-qotm");

  // Numbers move as requests flow: the route's total, read twice, the
  // first time once a sample has counted some (before, its cells are "–").
  await page.waitForFunction(
    () => /^\d/.test(document.querySelector('[data-testid="row-qotm-all"] td')?.innerText ?? ""),
    null,
    { timeout: WAIT },
  );
  result.total_first = await text(page, "row-qotm-all");
  await page.waitForFunction(
    (first) => document.querySelector('[data-testid="row-qotm-all"]')?.innerText !== first,
    result.total_first,
    { timeout: WAIT },
  );
  result.total_second = await text(page, "row-qotm-all");
  result.rps_text = await page
    .locator('[data-testid="row-qotm-all"] [data-field="rps"]')
    .innerText();
  await shot(page, "traffic", "1-traffic.png");

  // A weight change over the admin API shows without a reload.
  await adminCall("PUT", "/routes/qotm/weights", { weights: { v1: 50, v2: 50 } });
  await page.waitForFunction(
    () => /v1 50%.*v2 50%/.test(document.querySelector('[data-testid="weights-qotm"]')?.innerText ?? ""),
    null,
    { timeout: WAIT },
  );
  result.weights_after = await text(page, "weights-qotm");
  await shot(page, "weights", "2-weights-changed.png");

  // A canary's step, weights and decisions show while it runs.
  await adminCall("POST", "/canary/qotm/start", {
    to: "v2",
    from: "v1",
    steps: [20, 60, 100],
    // Long enough to read the first step, short enough to see a verdict.
    interval: "8s",
    min_requests: 5,
  });
  await page.locator('[data-testid="canary-step-qotm"]').waitFor({ timeout: WAIT });
  result.canary_step = await text(page, "canary-step-qotm");
  result.canary_phase = await text(page, "canary-phase-qotm");
  await page.waitForFunction(
    () => /v1 80%.*v2 20%/.test(document.querySelector('[data-testid="weights-qotm"]')?.innerText ?? ""),
    null,
    { timeout: WAIT },
  );
  result.weights_canary = await text(page, "weights-qotm");
  result.changes = await page.locator("#changes li").allInnerTexts();
  result.replica_rows = await page.locator("#replicas tbody tr").count();
  result.endpoint_rows = await page.locator("#endpoints tbody tr").count();
  result.mesh_edges = await page.locator("#mesh svg g.edge").count();
  await shot(page, "canary", "3-canary.png");
  // The first window's verdict and figures.
  await page.locator('[data-testid="canary-figures-qotm"]').waitFor({ timeout: WAIT });
  result.canary_verdict = await text(page, "canary-verdict-qotm");
  result.canary_figures = await page
    .locator('[data-testid="canary-figures-qotm"] tbody tr')
    .allInnerTexts();
  await shot(page, "verdict", "4-canary-verdict.png");
  await shot(page, "full", "5-full-page.png", true);

  // A canary held by a gate says what it waits for: a confirm-rollout
  // webhook on a port nobody listens on never opens. (The canary above
  // may have ended by itself: an abort that finds nothing to abort is fine.)
  await adminCall("POST", "/canary/qotm/abort", {}).catch(() => null);
  await adminCall("POST", "/canary/qotm/start", {
    to: "v2",
    from: "v1",
    interval: "1s",
    webhooks: [{ name: "hold", type: "confirm-rollout", url: "http://127.0.0.1:9/" }],
  });
  await page.locator('[data-testid="canary-waiting-qotm"]').waitFor({ timeout: WAIT });
  result.canary_waiting = await text(page, "canary-waiting-qotm");
  await shot(page, "waiting", "6-canary-waiting.png");
  await adminCall("POST", "/canary/qotm/abort", {}).catch(() => null);

  // Keyboard: the first Tab reaches the skip link.
  await page.keyboard.press("Tab");
  result.first_tab = await page.evaluate(() => document.activeElement?.textContent?.trim());
  result.headings = await page.locator("h1, h2").allInnerTexts();
  result.images_without_label = await page
    .locator('[role="img"]')
    .evaluateAll((els) => els.filter((e) => !e.getAttribute("aria-label") && !e.getAttribute("aria-labelledby")).length);

  // Keyboard: a chart's legend entry hides and shows its series.
  const legend = page.locator('[data-route="qotm"] .chart .u-legend [role="button"]').first();
  await legend.focus();
  result.legend_label = await legend.getAttribute("aria-label");
  const pressed = () => legend.getAttribute("aria-pressed");
  result.legend_pressed = [await pressed()];
  await page.keyboard.press("Enter");
  result.legend_pressed.push(await pressed());
  await page.keyboard.press("Enter");
  result.legend_pressed.push(await pressed());

  // The explain form names the rule a request matches and its backends.
  await page.locator('#explain input[name="path"]').fill("/qotm/");
  await page.locator('#explain button[type="submit"]').click();
  await page.waitForFunction(
    () => /matches|Cannot explain/.test(document.querySelector('[data-testid="explain-result"]')?.innerText ?? ""),
    null,
    { timeout: WAIT },
  );
  result.explain = await text(page, "explain-result");
  await shot(page, "explain", "7-explain.png");

  // The tap panel shows requests that arrive after it started.
  await page.locator('#tap input[name="route"]').fill("qotm");
  await page.locator("#tap-toggle").click();
  await page.locator('[data-testid="tap-lines"] tbody tr').first().waitFor({ timeout: WAIT });
  result.tap_first_row = await page.locator('[data-testid="tap-lines"] tbody tr').first().innerText();
  await page.locator("#tap-toggle").click();
  result.tap_state = await page.locator("#tap-state").innerText();
}
