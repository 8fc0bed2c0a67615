"use strict";
let partner = null;

function showBalance(b) {
  if (!b) { return; }
  document.getElementById("portal-balance").textContent = b.payable + " " + b.currency;
  document.getElementById("portal-period").textContent = Settle.day(b.open_period.start) + " → " + Settle.day(b.open_period.end);
  document.getElementById("portal-gross").textContent = b.preview.gross_sales;
  document.getElementById("portal-closing").textContent = b.preview.closing;
  document.getElementById("portal-count").textContent = Settle.int(b.preview.transaction_count);
}

async function refresh() {
  const base = "/v1/partners/" + encodeURIComponent(partner);
  const st = await Settle.api(base + "/statements");
  Settle.fill("statement-list", st.statements.map((s) => {
    const link = base + "/statements/" + encodeURIComponent(s.period_start);
    return Settle.el("tr", {}, Settle.el("td", {}, Settle.day(s.period_start) + " → " + Settle.day(s.period_end)),
      Settle.el("td", { class: "num" }, s.opening), Settle.el("td", { class: "num" }, s.closing), Settle.el("td", { class: "num" }, s.transaction_count),
      Settle.el("td", {}, Settle.el("a", { href: link + "?format=csv" }, "CSV"), " ", Settle.el("a", { href: link + "?format=pdf" }, "PDF")));
  }));
  const ex = await Settle.api("/v1/exceptions?limit=12");
  Settle.fill("exception-list", ex.exceptions.length ? ex.exceptions.map((e) => Settle.el("tr", {}, Settle.el("td", {}, e.id),
    Settle.el("td", {}, e.reason), Settle.el("td", {}, e.status))) : [Settle.el("tr", {}, Settle.el("td", { class: "muted" }, "none"))]);
  const tx = await Settle.api("/v1/transactions?limit=15");
  Settle.fill("portal-transactions", tx.transactions.map((t) => Settle.el("tr", {}, Settle.el("td", {}, t.id), Settle.el("td", {}, t.kind),
    Settle.el("td", { class: "num" }, (t.amount || "") + " " + (t.currency || "")), Settle.el("td", {}, Settle.day(t.received_at)),
    Settle.el("td", {}, Settle.el("span", { class: "badge " + (t.outcome.status === "applied" ? "ok" : "firing") }, t.outcome.reason || t.outcome.status)))));
}

(async () => {
  const me = await Settle.me();
  if (me.role !== "partner") { location.href = "/dashboard"; return; }
  partner = me.partner;
  document.getElementById("partner-name").textContent = partner;
  document.getElementById("who").textContent = me.subject;
  document.getElementById("logout").addEventListener("click", Settle.logout);
  document.getElementById("history-csv").href = "/v1/partners/" + encodeURIComponent(partner) + "/statements?format=csv";
  showBalance(await Settle.api("/v1/partners/" + encodeURIComponent(partner) + "/balance"));
  await refresh();
  setInterval(() => refresh().catch(() => {}), 5000);
  const es = new EventSource("/v1/live");
  es.addEventListener("balance", (ev) => { document.getElementById("live-state").textContent = "live"; showBalance(JSON.parse(ev.data)); });
  es.onerror = () => { document.getElementById("live-state").textContent = "reconnecting"; };
})();
