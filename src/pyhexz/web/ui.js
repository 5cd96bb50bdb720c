// Shared page code: authenticated fetch, the navigation bar, small formatting helpers.
"use strict";

const TOKEN_KEY = "pyhexzToken";
let tokenAsked = null;   // the one open question for the token, shared by every waiting request

// Asks for the token once, in a small form on the page (not window.prompt): every request
// that met a 401 meanwhile waits for the same answer. The token stays in this tab's
// sessionStorage, so it is not asked again on the next page, nor kept once the tab is closed.
function askToken(refused) {
  if (!tokenAsked) {
    tokenAsked = new Promise(resolve => {
      const form = document.createElement("form");
      form.id = "token-form";
      form.className = "token-form";
      form.innerHTML = `<label>This server needs an access token:
        <input type="password" name="token" autocomplete="current-password" required></label>
        <button type="submit">Continue</button><span class="err"></span>`;
      if (refused) form.querySelector(".err").textContent = "The server refused that token.";
      form.addEventListener("submit", ev => {
        ev.preventDefault();
        const t = form.elements.token.value.trim();
        if (!t) return;
        sessionStorage.setItem(TOKEN_KEY, t);
        form.remove();
        tokenAsked = null;
        resolve();
      });
      (document.querySelector("main") || document.body).prepend(form);
      form.elements.token.focus();
    });
  }
  return tokenAsked;
}

// Every request carries the bearer token the person gave (the host server may require one).
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (resp.status === 401) {
    // A token given while this request was under way is tried first; else ask (once).
    if (sessionStorage.getItem(TOKEN_KEY) === token) await askToken(token !== null);
    return api(path, options);
  }
  if (!resp.ok) {
    let msg = resp.status + " " + resp.statusText;
    try { const j = await resp.json(); if (j.error) msg = j.error; } catch (e) { /* not JSON */ }
    throw new Error(msg);
  }
  return resp;
}

async function apiJSON(path, options) { return (await api(path, options)).json(); }

function nav(active, pages) {
  const header = document.createElement("header");
  header.innerHTML = "<b>pyhexz</b>";
  for (const p of pages) {
    const a = document.createElement("a");
    a.href = p; a.textContent = p[0].toUpperCase() + p.slice(1);
    if (p === active) a.className = "active";
    header.appendChild(a);
  }
  document.body.prepend(header);
}

function fmt(v, digits = 3) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") {
    if (Number.isInteger(v)) return v.toLocaleString("en");
    return v.toFixed(digits);
  }
  return String(v);
}

function fmtTime(unix) { return unix ? new Date(unix * 1000).toLocaleString() : "–"; }

function showError(el, e) { el.textContent = String(e.message || e); el.className = "err"; }

// Refresh f every `seconds`, skipping a round while the tab is hidden.
function every(seconds, f) {
  f();
  setInterval(() => { if (!document.hidden) f(); }, seconds * 1000);
}

// Every page starts here: the navigation bar with the pages this server offers.
async function startPage(active) {
  let pages = [active];
  try { pages = (await apiJSON("api/pages")).pages; } catch (e) { /* keep just this page */ }
  nav(active, pages);
}
