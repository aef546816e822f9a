// Graphs as inline SVG from /1.0/instances/{ctid}/samples: CPU, RAM, swap and network.
"use strict";
(() => {
  const {api, size} = ovps;
  const ctid = document.getElementById("instance").dataset.ctid;
  const NS = "http://www.w3.org/2000/svg";
  const W = 400, H = 120, PAD = 4;
  const rangeSel = document.getElementById("range");

  function svgEl(tag, attrs) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    return e;
  }

  // series: [{values: [[t, v]...], cls}], fmt: label formatter; limit: a dashed line (e.g. the RAM limit)
  function draw(svg, series, fmt, limit) {
    const all = series.flatMap((s) => s.values.filter((p) => p[1] !== null));
    svg.replaceChildren();
    svg.dataset.points = String(Math.max(0, ...series.map((s) => s.values.filter((p) => p[1] !== null).length)));
    if (all.length === 0) {
      svg.append(Object.assign(svgEl("text", {x: W / 2, y: H / 2, "text-anchor": "middle", class: "nodata"}),
                               {textContent: "no samples yet"}));
      return;
    }
    const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
    let top = Math.max(...all.map((p) => p[1]), limit || 0) || 1;
    top *= 1.1;
    const x = (t) => PAD + (t1 > t0 ? (t - t0) / (t1 - t0) : 1) * (W - 2 * PAD);
    const y = (v) => H - PAD - (v / top) * (H - 2 * PAD);
    if (limit) svg.append(svgEl("line", {x1: 0, x2: W, y1: y(limit), y2: y(limit), class: "limit"}));
    for (const s of series) {
      const pts = s.values.filter((p) => p[1] !== null).map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1));
      svg.append(svgEl("polyline", {points: pts.join(" "), class: "line " + (s.cls || "")}));
    }
    const last = series.map((s) => { const v = s.values.filter((p) => p[1] !== null); return v.length ? fmt(v[v.length - 1][1]) : "-"; });
    const label = svgEl("text", {x: W - PAD, y: 14, "text-anchor": "end", class: "label"});
    label.textContent = last.join(" / ") + "  (max " + fmt(top / 1.1) + ")";
    svg.append(label);
  }

  async function refresh() {
    const data = await api("GET", "/1.0/instances/" + ctid + "/samples?range=" + rangeSel.value);
    const p = data.points;
    const col = (k) => p.map((q) => [q.t, q[k]]);
    draw(document.getElementById("g-cpu"), [{values: col("cpu")}], (v) => v.toFixed(1) + "%");
    draw(document.getElementById("g-memory"), [{values: col("memory")}], size, data.limits.ram);
    draw(document.getElementById("g-swap"), [{values: col("swap")}], size, data.limits.swap);
    draw(document.getElementById("g-net"), [{values: col("rx"), cls: "rx"}, {values: col("tx"), cls: "tx"}],
         (v) => size(v) + "/s");
    document.querySelector(".graphs").dataset.samples = String(p.length);
  }
  rangeSel.addEventListener("change", () => refresh().catch(console.error));
  refresh().catch(console.error);
  setInterval(() => refresh().catch(() => {}), 5000);
})();
