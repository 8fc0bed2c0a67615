// Shared by the pages: API calls with the session cookie and the CSRF token, formatting.
"use strict";
const Settle = {
  csrf() { return sessionStorage.getItem("settle_csrf") || ""; },
  async api(path, options) {
    const opts = Object.assign({ credentials: "same-origin", headers: {} }, options || {});
    if (opts.method && opts.method !== "GET") {
      opts.headers["x-csrf-token"] = Settle.csrf();
      opts.headers["content-type"] = "application/json";
    }
    const r = await fetch(path, opts);
    if (r.status === 401) { location.href = "/login"; throw new Error("unauthenticated"); }
    const body = await r.json().catch(() => null);
    if (!r.ok) { throw new Error(body && body.error ? body.error.code + ": " + body.error.message : "HTTP " + r.status); }
    return body;
  },
  async me() {
    const me = await Settle.api("/v1/me");
    if (me.csrf) { sessionStorage.setItem("settle_csrf", me.csrf); }
    return me;
  },
  async logout() {
    try { await Settle.api("/v1/auth/logout", { method: "POST", body: "{}" }); } finally { location.href = "/login"; }
  },
  el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") { e.className = v; } else if (k.startsWith("on")) { e.addEventListener(k.slice(2), v); } else { e.setAttribute(k, v); }
    }
    for (const c of children) { e.append(c instanceof Node ? c : document.createTextNode(c == null ? "" : String(c))); }
    return e;
  },
  fill(id, rows) { const t = document.getElementById(id); t.replaceChildren(...rows); },
  us(v) { return v >= 1000 ? (v / 1000).toFixed(v >= 100000 ? 0 : 1) + " ms" : v + " µs"; },
  int(v) { return Number(v || 0).toLocaleString("en-US"); },
  day(t) { return (t || "").slice(0, 16).replace("T", " "); },
  polyline(svg, values, cls) {
    const w = 600, h = 170, max = Math.max(1, ...values);
    const n = Math.max(1, values.length - 1);
    const pts = values.map((v, i) => (i * w / n).toFixed(1) + "," + (h - v * (h - 10) / max).toFixed(1)).join(" ");
    let line = svg.querySelector("polyline." + cls);
    if (!line) { line = document.createElementNS("http://www.w3.org/2000/svg", "polyline"); line.setAttribute("class", cls); svg.append(line); }
    line.setAttribute("points", pts);
  },
};
