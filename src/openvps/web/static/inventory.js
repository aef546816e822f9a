// The inventory: every instance, sortable and filterable here; live states from the event stream.
"use strict";
(() => {
  const {api, events, STATE_OF, size, el} = ovps;
  const body = document.querySelector("#inventory tbody");
  const filter = document.getElementById("filter");
  let items = [], sortKey = "ctid", sortDir = 1;

  const text = (it) => [it.ctid, it.name, it.state, it.template, it.node, it.owner, ...(it.ip || []),
    ...Object.entries(it.tags || {}).map(([k, v]) => k + "=" + v)].join(" ").toLowerCase();

  function sortValue(it, key) {
    if (key === "ip") return (it.ip || []).join(",");
    if (key === "tags") return Object.entries(it.tags || {}).map(([k, v]) => k + "=" + v).join(",");
    const v = it[key];
    return v === null || v === undefined ? -1 : v;
  }

  function use(used, limit) {
    return size(used) + " / " + (limit ? size(limit) : "∞");
  }

  function render() {
    const q = filter.value.trim().toLowerCase();
    const rows = items.filter((it) => !q || q.split(/\s+/).every((w) => text(it).includes(w)));
    rows.sort((a, b) => {
      const x = sortValue(a, sortKey), y = sortValue(b, sortKey);
      return (x < y ? -1 : x > y ? 1 : 0) * sortDir;
    });
    body.replaceChildren(...rows.map((it) => {
      const links = el("td", {class: "links"});
      for (const b of it.bookmarks) links.append(el("a", {href: b.url, target: "_blank", rel: "noopener noreferrer",
                                                          class: "bookmark"}, b.label), " ");
      if (it.ssh) links.append(el("code", {class: "ssh", text: it.ssh}));
      return el("tr", {"data-ctid": it.ctid, "data-name": it.name},
        el("td", {text: it.ctid}),
        el("td", {}, el("a", {href: "/ui/instances/" + it.ctid, class: "name"}, it.name)),
        el("td", {}, el("span", {class: "state state-" + it.state, text: it.state})),
        el("td", {text: it.template}), el("td", {text: it.node}), el("td", {text: (it.ip || []).join(", ")}),
        el("td", {text: use(it.memory, it.ram)}), el("td", {text: use(it.swap, it.swap_limit)}),
        el("td", {text: it.owner}),
        el("td", {}, ...Object.entries(it.tags || {}).map(([k, v]) => el("span", {class: "tag", text: k + "=" + v}))),
        links);
    }));
    document.getElementById("empty").hidden = items.length > 0;
  }

  let pending = null;
  async function load() {
    const data = await api("GET", "/ui/inventory.json");
    items = data.items;
    render();
  }
  function reloadSoon() {       // many events in a burst: one reload
    clearTimeout(pending);
    pending = setTimeout(() => load().catch(console.error), 300);
  }

  for (const th of document.querySelectorAll("#inventory th[data-key]")) {
    th.addEventListener("click", () => {
      const k = th.dataset.key;
      sortDir = k === sortKey ? -sortDir : 1;
      sortKey = k;
      document.querySelectorAll("#inventory th").forEach((h) => h.classList.remove("asc", "desc"));
      th.classList.add(sortDir > 0 ? "asc" : "desc");
      render();
    });
  }
  filter.addEventListener("input", render);

  events((ev) => {
    const state = STATE_OF[ev.type];
    const it = items.find((i) => String(i.ctid) === String(ev.instance));
    if (state && it) { it.state = state; render(); }
    if (ev.type !== "instance.limit") reloadSoon();
  }, document.getElementById("live"));
  load().catch((e) => { body.replaceChildren(el("tr", {}, el("td", {colspan: 11, class: "error", text: e.message}))); });
  setInterval(() => load().catch(() => {}), 15000);     // RAM/swap columns follow the samples
})();
