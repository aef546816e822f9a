// openvps dashboard: helpers shared by the pages (REST calls with the CSRF token, operations, events).
"use strict";
const ovps = (() => {
  const meta = document.querySelector('meta[name="csrf-token"]');
  const csrf = meta ? meta.content : "";

  async function api(method, path, body) {
    const opts = {method, credentials: "same-origin", headers: {"Accept": "application/json"}};
    if (method !== "GET" && method !== "HEAD") opts.headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    const r = await fetch(path, opts);
    if (r.status === 401) { location.href = "/ui/login"; throw new Error("log in again"); }
    const data = r.status === 204 ? null : await r.json().catch(() => null);
    if (!r.ok) throw new Error((data && data.error && data.error.message) || r.status + " " + r.statusText);
    return data;
  }

  // Follow an operation to its end, showing its progress and message in box (a .progress element).
  async function follow(op, box) {
    const bar = box && box.querySelector(".bar span"), msg = box && box.querySelector(".msg");
    if (box) { box.hidden = false; box.classList.remove("failed", "done"); }
    for (;;) {
      if (bar) bar.style.width = Math.round((op.progress || 0) * 100) + "%";
      if (msg) msg.textContent = op.kind + " " + op.target + ": " + op.status + (op.message ? " — " + op.message : "");
      if (!["pending", "running"].includes(op.status)) break;
      op = await api("GET", "/1.0/operations/" + op.id + "/wait?timeout=1");
    }
    if (box) box.classList.add(op.status === "success" ? "done" : "failed");
    if (op.status !== "success") throw new Error((op.error && op.error.message) || op.message || op.status);
    return op;
  }

  // Live events (Server-Sent Events; the browser reconnects with Last-Event-ID by itself).
  function events(onEvent, indicator) {
    const es = new EventSource("/1.0/events?type=instance.*");
    const mark = (text, ok) => { if (indicator) { indicator.textContent = text; indicator.classList.toggle("on", ok); } };
    es.onopen = () => mark("● live", true);
    es.onerror = () => mark("○ reconnecting", false);
    for (const t of ["created", "started", "stopped", "suspended", "resumed", "destroyed", "updated", "limit"]) {
      es.addEventListener("instance." + t, (e) => onEvent(JSON.parse(e.data)));
    }
    return es;
  }

  const STATE_OF = {"instance.started": "running", "instance.stopped": "stopped", "instance.suspended": "suspended",
                    "instance.resumed": "running"};

  function size(n) {
    if (n === null || n === undefined) return "-";
    const u = ["B", "K", "M", "G", "T"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i ? n.toFixed(1) : Math.round(n)) + u[i];
  }

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  return {api, follow, events, STATE_OF, size, el, csrf};
})();
