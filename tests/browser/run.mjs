// Browser test of the dashboard and the partner portal in real headless Chromium.
// Called by node/tests/browser.rs with SETTLE_URL, the admin's credentials, a partner user's
// credentials, the partner's id, another partner's id and a screenshot directory.
// Exits non-zero (with a message) on any failed check.
import { chromium } from "playwright-core";
import { createHmac } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";

const env = (k) => { const v = process.env[k]; if (!v) { throw new Error("missing " + k); } return v; };
const URL = env("SETTLE_URL");
// The portal may be served by another member of a cluster (sessions are replicated).
const PORTAL_URL = process.env.SETTLE_PORTAL_URL || URL;
// A TOTP code is accepted once: when the harness logged in with the current step's code, the
// browser uses the next step's (accepted within the ±1 step window).
const TOTP_STEP_OFFSET = Number(process.env.SETTLE_TOTP_STEP_OFFSET || 0);
const SHOTS = env("SETTLE_SCREENSHOT_DIR");
const DEADLINE_MS = 20000;

function base32(text) {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  let bits = 0, value = 0; const out = [];
  for (const c of text.replace(/=+$/, "")) {
    value = (value << 5) | alphabet.indexOf(c.toUpperCase()); bits += 5;
    if (bits >= 8) { bits -= 8; out.push((value >>> bits) & 0xff); }
  }
  return Buffer.from(out);
}

// RFC 6238 with SHA-1, independent of the server's implementation.
function totp(secret) {
  const step = BigInt(Math.floor(Date.now() / 1000 / 30) + TOTP_STEP_OFFSET);
  const msg = Buffer.alloc(8); msg.writeBigUInt64BE(step);
  const mac = createHmac("sha1", base32(secret)).update(msg).digest();
  const o = mac[mac.length - 1] & 0xf;
  const n = ((mac[o] & 0x7f) << 24) | (mac[o + 1] << 16) | (mac[o + 2] << 8) | mac[o + 3];
  return String(n % 1000000).padStart(6, "0");
}

async function until(what, fn) {
  const end = Date.now() + DEADLINE_MS;
  for (;;) {
    const v = await fn();
    if (v) { return v; }
    if (Date.now() > end) { throw new Error("timed out waiting for: " + what); }
    await new Promise((r) => setTimeout(r, 200));
  }
}

const num = (s) => Number(String(s).replace(/[^0-9.-]/g, ""));

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
  // playwright gives each launch a fresh temporary profile (--user-data-dir) of its own.
});
try {
  mkdirSync(SHOTS, { recursive: true });
  // --- Operator dashboard: log in with TOTP, numbers move, drill into a partner.
  const admin = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
  const page = await admin.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("requestfailed", (r) => { if (!r.url().includes("/v1/live")) { errors.push("request failed: " + r.url()); } });
  await page.goto(URL + "/dashboard");
  await page.waitForURL(/\/login$/);
  await page.fill("#username", env("SETTLE_ADMIN_USER"));
  await page.fill("#password", env("SETTLE_ADMIN_PASSWORD"));
  await page.fill("#totp", totp(env("SETTLE_ADMIN_TOTP")));
  await page.click("#submit");
  await page.waitForURL(/\/dashboard$/);
  errors.length = 0; // the anonymous first visit was refused on purpose
  const first = await until("acknowledged count above zero", async () => {
    const v = num(await page.textContent("#total-ingested")); return v > 0 ? v : null;
  });
  await until("acknowledged count moving under load", async () => num(await page.textContent("#total-ingested")) > first);
  await until("a throughput figure", async () => num(await page.textContent("#ingest-rate")) > 0);
  await until("an ack latency", async () => (await page.textContent("#ack-p99")).includes("s"));
  const own = env("SETTLE_PARTNER");
  await until("the partner table", async () => (await page.$(`tr[data-partner="${own}"]`)) !== null);
  await page.click(`tr[data-partner="${own}"]`);
  await until("the drill-down", async () => (await page.textContent("#drill-partner")) === own);
  await until("drill-down transactions", async () => (await page.$$("#drill-transactions tr")).length > 0);
  const balance = await page.textContent("#drill-balance");
  if (!/^-?\d+(\.\d+)? [A-Z]{3}$/.test(balance.trim())) { throw new Error("drill-down balance not a decimal: " + balance); }
  if (process.env.SETTLE_EXPECT_NODES) {
    // Cluster health: every node up, every shard with a leader (one cell per shard).
    const n = process.env.SETTLE_EXPECT_NODES;
    const shards = Number(env("SETTLE_EXPECT_SHARDS"));
    await until("every node up", async () => (await page.textContent("#cluster-summary")).includes(n + "/" + n + " nodes up"));
    await until("every shard with a leader", async () => (await page.$$("#shards .shard.ok")).length === shards);
  }
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: SHOTS + "/dashboard.png", fullPage: true });
  if (errors.length) { throw new Error("dashboard errors: " + errors.join("; ")); }

  // --- Partner portal: own balance live, statements with downloads, nothing of another partner.
  const partner = await browser.newContext({ viewport: { width: 1300, height: 900 }, acceptDownloads: true });
  const p = await partner.newPage();
  await p.goto(PORTAL_URL + "/login");
  await p.fill("#username", env("SETTLE_PARTNER_USER"));
  await p.fill("#password", env("SETTLE_PARTNER_PASSWORD"));
  await p.click("#submit");
  await p.waitForURL(/\/portal$/);
  await until("own partner name", async () => (await p.textContent("#partner-name")) === own);
  const b1 = await until("own balance", async () => { const t = await p.textContent("#portal-balance"); return t !== "–" ? t : null; });
  await until("balance moving live", async () => (await p.textContent("#portal-balance")) !== b1);
  await until("statement history", async () => (await p.$$("#statement-list tr")).length > 0);
  const [download] = await Promise.all([p.waitForEvent("download"), p.click("#statement-list tr a:text('PDF')")]);
  const pdfPath = await download.path();
  const pdf = readFileSync(pdfPath);
  if (!pdf.subarray(0, 8).toString().startsWith("%PDF")) { throw new Error("the PDF download is not a PDF"); }
  const csv = await p.evaluate(async (id) => (await fetch(`/v1/partners/${id}/statements?format=csv`)).text(), own);
  if (!csv.startsWith("partner,period_start") || !csv.includes("\n" + own + ",")) { throw new Error("CSV: " + csv.slice(0, 200)); }
  const body = await p.textContent("body");
  const other = env("SETTLE_OTHER_PARTNER");
  if (body.includes(other)) { throw new Error("the portal shows another partner: " + other); }
  // Nothing of another partner is reachable from the partner's session.
  const probes = await p.evaluate(async (other) => {
    const paths = [`/v1/partners/${other}`, `/v1/partners/${other}/balance`, `/v1/partners/${other}/statements`,
      `/v1/transactions?partner=${other}`, `/v1/exceptions?partner=${other}`, `/v1/overview`, `/v1/audit`];
    const out = {};
    for (const path of paths) { out[path] = (await fetch(path)).status; }
    const g = await fetch("/graphql", { method: "POST", headers: { "content-type": "application/json", "x-csrf-token": sessionStorage.getItem("settle_csrf") },
      body: JSON.stringify({ query: `{ balance(partner: "${other}") { payable } }` }) });
    out.graphql = (await g.json()).errors ? "denied" : "allowed";
    return out;
  }, other);
  for (const [path, status] of Object.entries(probes)) {
    if (!(status === 403 || status === 404 || status === "denied")) { throw new Error(`${path} reachable from the portal: ${status}`); }
  }
  await p.screenshot({ path: SHOTS + "/portal.png", fullPage: true });
  console.log("browser: dashboard and portal checks passed", JSON.stringify(probes));
} finally {
  await browser.close();
}
