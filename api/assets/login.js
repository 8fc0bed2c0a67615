"use strict";
document.getElementById("login").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = ev.target;
  const body = { username: f.username.value, password: f.password.value };
  if (f.totp.value) { body.totp = f.totp.value; }
  const r = await fetch("/v1/auth/login", { method: "POST", credentials: "same-origin", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const out = await r.json().catch(() => null);
  if (!r.ok) { document.getElementById("error").textContent = out && out.error ? out.error.message : "login failed"; return; }
  sessionStorage.setItem("settle_csrf", out.csrf);
  location.href = out.user.role === "partner" ? "/portal" : "/dashboard";
});
