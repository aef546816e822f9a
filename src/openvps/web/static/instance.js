// One instance: lifecycle buttons with the operation's progress, live limits, bookmarks, live state.
"use strict";
(() => {
  const {api, follow, events, STATE_OF, el} = ovps;
  const root = document.getElementById("instance");
  const ctid = root.dataset.ctid, base = "/1.0/instances/" + ctid;
  const box = document.getElementById("progress");
  const stateEl = document.getElementById("state");

  function setState(s) {
    stateEl.textContent = s;
    stateEl.className = "state state-" + s;
    const allowed = {start: ["stopped"], stop: ["running", "suspended"], restart: ["running"],
                     suspend: ["running"], resume: ["suspended"]};
    for (const [a, states] of Object.entries(allowed)) document.getElementById("act-" + a).disabled = !states.includes(s);
  }
  setState(stateEl.textContent.trim());

  let leaving = false;     // destroyed: go to the inventory once (the operation and the event both say so)
  function leave() {
    if (!leaving) { leaving = true; location.href = "/ui/"; }
  }

  function failed(err) {
    box.hidden = false;
    box.classList.add("failed");
    box.querySelector(".msg").textContent = "error: " + err.message;
  }

  for (const b of document.querySelectorAll("button[data-action]")) {
    b.addEventListener("click", async () => {
      b.disabled = true;
      try {
        await follow(await api("POST", base + "/" + b.dataset.action), box);
        const v = await api("GET", base);
        setState(v.state);
      } catch (err) { failed(err); b.disabled = false; }
    });
  }

  document.getElementById("act-destroy").addEventListener("click", async () => {
    if (!confirm("Destroy " + root.dataset.name + " and all its files? This cannot be undone.")) return;
    try {
      await follow(await api("DELETE", base + "?force=true"), box);
      leave();
    } catch (err) { failed(err); }
  });

  document.getElementById("limits").addEventListener("submit", async (e) => {
    e.preventDefault();
    const limits = {};
    for (const k of ["ram", "swap", "cpus", "cpulimit"]) {
      const input = document.getElementById("l-" + k), v = input.value.trim();
      // only what the user changed (the fields show the limits as rendered, e.g. cpus "all")
      if (v !== "" && v !== input.defaultValue.trim()) limits[k] = /^\d+$/.test(v) ? parseInt(v, 10) : v;
    }
    if (!Object.keys(limits).length) return failed(new Error("change a limit first"));
    try {
      await follow(await api("PATCH", base, {limits, save: document.getElementById("l-save").checked}), box);
    } catch (err) { failed(err); }
  });

  // bookmarks: the page shows them; add/remove replace the whole list (PUT)
  let marks = [];
  const list = document.getElementById("bookmarks");
  function renderMarks(data) {
    marks = data.bookmarks;
    list.replaceChildren(...marks.map((b, i) => {
      const rm = el("button", {class: "small", type: "button", title: "remove"}, "✕");
      rm.addEventListener("click", () => save(marks.filter((_, j) => j !== i)));
      return el("li", {}, el("a", {href: b.url, target: "_blank", rel: "noopener noreferrer", class: "bookmark"}, b.label),
                " ", el("code", {text: b.url}), " ", rm);
    }));
    document.getElementById("ssh-command").textContent = data.ssh || "-";
  }
  async function save(items) {
    try { renderMarks(await api("PUT", base + "/bookmarks", {bookmarks: items})); } catch (err) { failed(err); }
  }
  document.getElementById("bookmark-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const label = document.getElementById("bm-label").value.trim(), url = document.getElementById("bm-url").value.trim();
    await save([...marks, {label, url}]);
    document.getElementById("bm-label").value = document.getElementById("bm-url").value = "";
  });
  api("GET", base + "/bookmarks").then(renderMarks).catch(failed);

  events((ev) => {
    if (String(ev.instance) !== String(ctid)) return;
    if (STATE_OF[ev.type]) setState(STATE_OF[ev.type]);
    if (ev.type === "instance.destroyed") leave();
  }, null);
})();
