"use strict";
const series = { ingest: [], p99: [] };
const balances = {};
let partners = [];
let topCounts = {};

function renderPartners() {
  Settle.fill("partner-table", partners.map((p) => {
    const b = balances[p.id];
    return Settle.el("tr", { class: "clickable", "data-partner": p.id, onclick: () => drill(p.id) },
      Settle.el("td", {}, p.id), Settle.el("td", {}, p.settlement_currency),
      Settle.el("td", { class: "num" }, b ? b.payable : "…"),
      Settle.el("td", { class: "num" }, b ? b.preview.gross_sales : "…"),
      Settle.el("td", { class: "num" }, Settle.int(topCounts[p.id] || 0)));
  }));
}

async function refreshPartners() {
  const list = await Settle.api("/v1/partners");
  partners = list.partners;
  const ov = await Settle.api("/v1/overview");
  topCounts = {};
  for (const t of ov.top_partners) { topCounts[t.partner] = t.transactions; }
  Settle.fill("nodes", ov.nodes.map((n) => Settle.el("tr", {}, Settle.el("td", {}, "node " + n.id), Settle.el("td", {}, n.role),
    Settle.el("td", {}, Settle.el("span", { class: "badge " + (n.up ? "ok" : "firing") }, n.up ? "up" : "down")), Settle.el("td", { class: "muted" }, n.detail))));
  renderCluster(ov.cluster);
  await Promise.all(partners.slice(0, 50).map(async (p) => { balances[p.id] = await Settle.api("/v1/partners/" + encodeURIComponent(p.id) + "/balance"); }));
  renderPartners();
  const dl = await Settle.api("/v1/alerts/dead-letters");
  Settle.fill("dead-letters", dl.dead_letters.slice(0, 10).map((d) => Settle.el("tr", {}, Settle.el("td", {}, d.channel), Settle.el("td", {}, d.target), Settle.el("td", { class: "muted" }, d.error))));
}

// Cluster health: per shard its leader and its replicas' lag behind the leader's log.
const LAG_WARNING = 100;
function renderCluster(c) {
  if (!c) { Settle.fill("shards", []); document.getElementById("cluster-summary").textContent = ""; return; }
  const up = c.nodes.filter((n) => n.up).length;
  const lagOf = (s) => Math.max(0, ...s.replicas.map((r) => r.lag || 0));
  document.getElementById("cluster-summary").textContent = up + "/" + c.nodes.length + " nodes up · " + c.shards.length + " shards, "
    + (c.shards_without_leader ? c.shards_without_leader + " without a leader" : "every one with a leader") + " · max lag " + (c.max_lag || 0);
  Settle.fill("shards", c.shards.map((s) => {
    const lag = lagOf(s);
    const cls = s.leader == null ? "firing" : (lag > LAG_WARNING ? "warning" : "ok");
    return Settle.el("div", { class: "shard " + cls, "data-shard": s.shard, "data-leader": s.leader == null ? "" : s.leader,
      title: "shard " + s.shard + ", leader " + (s.leader == null ? "none" : "node " + s.leader) + ", lag " + lag },
      s.shard + (s.leader == null ? " –" : " @" + s.leader));
  }));
}

async function drill(id) {
  const o = await Settle.api("/v1/partners/" + encodeURIComponent(id) + "/overview");
  document.getElementById("drill").hidden = false;
  document.getElementById("drill-partner").textContent = id;
  const b = o.balance;
  document.getElementById("drill-balance").textContent = b ? b.payable + " " + b.currency : "–";
  document.getElementById("drill-period").textContent = b ? Settle.day(b.open_period.start) + " → " + Settle.day(b.open_period.end) : "–";
  document.getElementById("drill-gross").textContent = b ? b.preview.gross_sales : "–";
  document.getElementById("drill-closing").textContent = b ? b.preview.closing : "–";
  Settle.fill("drill-transactions", o.recent_transactions.map((t) => Settle.el("tr", {},
    Settle.el("td", {}, t.id), Settle.el("td", {}, t.kind), Settle.el("td", { class: "num" }, (t.amount || "") + " " + (t.currency || "")),
    Settle.el("td", {}, Settle.day(t.received_at)),
    Settle.el("td", {}, Settle.el("span", { class: "badge " + (t.outcome.status === "applied" ? "ok" : "firing") }, t.outcome.reason || t.outcome.status)))));
  Settle.fill("drill-statements", o.statements.map((s) => Settle.el("tr", {},
    Settle.el("td", {}, Settle.day(s.period_start) + " → " + Settle.day(s.period_end)), Settle.el("td", { class: "num" }, s.closing), Settle.el("td", { class: "num" }, s.transaction_count))));
  document.getElementById("drill").scrollIntoView();
}

function onSample(data) {
  const s = data.sample;
  document.getElementById("ingest-rate").textContent = Settle.int(s.ingest_per_s);
  document.getElementById("applied-rate").textContent = Settle.int(s.applied_per_s);
  document.getElementById("ack-p50").textContent = s.ack_p50_us ? Settle.us(s.ack_p50_us) : "–";
  document.getElementById("ack-p99").textContent = s.ack_p99_us ? Settle.us(s.ack_p99_us) : "–";
  document.getElementById("total-ingested").textContent = Settle.int(s.total_ingested);
  document.getElementById("in-flight").textContent = Settle.int(s.in_flight);
  document.getElementById("total-exceptions").textContent = Settle.int(s.total_exceptions);
  series.ingest.push(s.ingest_per_s); series.p99.push(s.ack_p99_us);
  if (series.ingest.length > 120) { series.ingest.shift(); series.p99.shift(); }
  Settle.polyline(document.getElementById("chart"), series.ingest, "ingest");
  window.__exc = window.__exc || [];
  window.__exc.push(s.exceptions); if (window.__exc.length > 60) { window.__exc.shift(); }
  const sum = {};
  for (const e of window.__exc) { for (const [k, v] of Object.entries(e)) { sum[k] = (sum[k] || 0) + v; } }
  const rows = Object.entries(sum).sort((a, b) => b[1] - a[1]).map(([k, v]) => Settle.el("tr", {}, Settle.el("td", {}, k), Settle.el("td", { class: "num" }, v + "/min")));
  Settle.fill("exception-reasons", rows.length ? rows : [Settle.el("tr", {}, Settle.el("td", { class: "muted" }, "none"))]);
  Settle.fill("alerts", data.alerts.length ? data.alerts.map((a) => Settle.el("tr", {}, Settle.el("td", {}, Settle.el("span", { class: "badge " + a.severity }, a.severity)), Settle.el("td", {}, a.name), Settle.el("td", { class: "num" }, String(a.value)))) : [Settle.el("tr", {}, Settle.el("td", { class: "muted" }, "none firing"))]);
}

(async () => {
  const me = await Settle.me();
  if (me.role === "partner") { location.href = "/portal"; return; }
  document.getElementById("who").textContent = me.subject + " (" + me.role + ")";
  document.getElementById("logout").addEventListener("click", Settle.logout);
  const ov = await Settle.api("/v1/overview");
  for (const s of ov.samples.slice(-120)) { series.ingest.push(s.ingest_per_s); }
  await refreshPartners();
  setInterval(() => refreshPartners().catch(() => {}), 3000);
  const es = new EventSource("/v1/live");
  es.addEventListener("sample", (ev) => { document.getElementById("live-state").textContent = "live"; onSample(JSON.parse(ev.data)); });
  es.onerror = () => { document.getElementById("live-state").textContent = "reconnecting"; };
})();
