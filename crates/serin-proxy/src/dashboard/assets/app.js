// serin's live dashboard: loads the kept history from /ui/state, then
// follows /ui/events (server-sent events, one `update` a second). Charts are
// uPlot's; everything else is plain DOM.
(function () {
  "use strict";

  const HISTORY = 600;
  const token = new URLSearchParams(location.search).get("token");
  const query = token ? "?token=" + encodeURIComponent(token) : "";
  // Okabe–Ito colours, darkened where needed for contrast on white.
  const COLOURS = ["#0072b2", "#c24e00", "#007a5a", "#a3487f", "#5a4bc2", "#4d4d4d"];
  const QUANTILES = [
    { key: "p50_ms", label: "p50", dash: [2, 3] },
    { key: "p95_ms", label: "p95", dash: [8, 4] },
    { key: "p99_ms", label: "p99", dash: [] },
  ];

  let samples = [];
  let status = null;
  const routeViews = new Map();

  const $ = (sel) => document.querySelector(sel);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function slug(s) {
    return String(s).replace(/[^A-Za-z0-9_-]/g, "_");
  }

  function fmtNumber(v, digits) {
    if (v === null || v === undefined || Number.isNaN(v)) return "–";
    return v.toFixed(digits);
  }

  function fmtMs(v) {
    if (v === null || v === undefined) return "–";
    return (v < 10 ? v.toFixed(2) : v.toFixed(1)) + " ms";
  }

  function fmtTime(ms) {
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  function setConnection(state, text) {
    const c = $("#connection");
    c.dataset.state = state;
    c.textContent = text;
  }

  // ---- traffic: one card per route ----

  /** Versions of a route, in the order its rules name them. */
  function routeVersions(route) {
    const seen = new Map();
    for (const rule of route.rules) {
      for (const b of rule.backends) {
        const id = b.service + "/" + b.version;
        if (!seen.has(id)) seen.set(id, { service: b.service, version: b.version });
      }
    }
    // Versions that had traffic but are no longer in a rule stay visible.
    for (const s of samples.length ? samples[samples.length - 1].series : []) {
      if (s.route !== route.name || s.service === "") continue;
      const id = s.service + "/" + s.version;
      if (!seen.has(id)) seen.set(id, { service: s.service, version: s.version });
    }
    return [...seen.values()];
  }

  function versionLabel(route, v) {
    // A route to one service names its versions; a route to several
    // names the service too.
    const services = new Set(route.rules.flatMap((r) => r.backends.map((b) => b.service)));
    return services.size === 1 && services.has(v.service) ? v.version : v.service + "/" + v.version;
  }

  function weightsText(route) {
    return route.rules
      .filter((r) => r.backends.length > 0)
      .map((r) => {
        const parts = r.backends.map((b) => b.version + " " + Math.round(b.percent) + "%");
        const name = r.name ? r.name : "rule " + r.index;
        return (route.rules.length > 1 ? name + ": " : "") + parts.join(" · ");
      })
      .join("; ");
  }

  function chartOpts(title, unit, series, width) {
    return {
      title: undefined,
      width: width,
      height: 150,
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
      // From 0, and at least 0 to 1 so that a quiet series is a flat line
      // at the bottom rather than a magnified nothing.
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? Math.max(max * 1.1, 1) : 1] } },
      axes: [
        // Whole seconds at least: samples are a second apart.
        { stroke: "#4a5360", grid: { stroke: "#e3e6ea" }, ticks: { stroke: "#d4d8de" }, space: 70,
          incrs: [1, 2, 5, 10, 15, 30, 60, 120, 300, 600],
          values: (u, splits) => splits.map((s) => fmtTime(s * 1000)) },
        { stroke: "#4a5360", grid: { stroke: "#e3e6ea" }, ticks: { stroke: "#d4d8de" }, size: 50,
          values: (u, vals, ax, space, incr) => vals.map((v) => v.toFixed(incr < 0.1 ? 2 : incr < 1 ? 1 : 0)) },
      ],
      series: [{}].concat(series),
    };
  }

  function buildRouteView(route) {
    const id = slug(route.name);
    const versions = routeVersions(route);
    const kind = route.kind === "sidecar" ? "sidecar route: " + route.caller + " calls " + route.callee : "gateway route";
    const weights = el("p", { class: "weights", "data-testid": "weights-" + id });
    const table = el("table", { class: "now", "data-testid": "now-" + id },
      el("caption", { class: "visually-hidden", text: "Route " + route.name + " in the last second" }),
      el("thead", {}, el("tr", {},
        el("th", { scope: "col", text: "Version" }),
        el("th", { scope: "col", class: "num", text: "Requests" }),
        el("th", { scope: "col", class: "num", text: "Req/s" }),
        el("th", { scope: "col", class: "num", text: "Errors" }),
        el("th", { scope: "col", class: "num", text: "p50" }),
        el("th", { scope: "col", class: "num", text: "p95" }),
        el("th", { scope: "col", class: "num", text: "p99" }))),
      el("tbody"));
    const tbody = table.querySelector("tbody");
    const rows = new Map();
    for (const v of versions.concat([{ service: "", version: "" }])) {
      const label = v.service === "" ? "all" : versionLabel(route, v);
      const row = el("tr", { "data-testid": "row-" + id + "-" + slug(v.service === "" ? "all" : v.version) },
        el("th", { scope: "row", text: label }));
      for (const f of ["total", "rps", "error_pct", "p50_ms", "p95_ms", "p99_ms"]) {
        row.append(el("td", { class: "num", "data-field": f, text: "–" }));
      }
      tbody.append(row);
      rows.set(v.service + "/" + v.version, row);
    }
    const charts = el("div", { class: "charts" });
    const card = el("article", { class: "route", "data-route": route.name, "aria-labelledby": "route-" + id },
      el("div", { class: "route-head" },
        el("h3", { id: "route-" + id, text: route.name }),
        el("p", { class: "kind", text: kind })),
      weights, charts, table);
    const view = { route, card, weights, rows, versions, charts: [], key: versions.map((v) => v.service + "/" + v.version).join(",") };
    const defs = [
      { title: "Requests per second", unit: "req/s", field: "rps" },
      { title: "Errors (5xx, % of requests)", unit: "%", field: "error_pct" },
      { title: "Latency (ms)", unit: "ms", field: null },
    ];
    for (const [i, d] of defs.entries()) {
      const holder = el("div", { class: "chart", role: "img", "aria-label": d.title + " for route " + route.name });
      const fig = el("figure", {}, el("figcaption", { id: "cap-" + id + "-" + i, text: d.title }), holder);
      charts.append(fig);
      let series;
      if (d.field) {
        series = versions.map((v, n) => ({ label: versionLabel(route, v), stroke: COLOURS[n % COLOURS.length], width: 2, spanGaps: false }));
      } else {
        series = [];
        versions.forEach((v, n) => {
          for (const q of QUANTILES) {
            series.push({ label: versionLabel(route, v) + " " + q.label, stroke: COLOURS[n % COLOURS.length], width: q.label === "p99" ? 2 : 1.5, dash: q.dash });
          }
        });
      }
      view.charts.push({ def: d, holder, series, plot: null });
    }
    return view;
  }

  function chartData(view, def) {
    const xs = [];
    const cols = [];
    const width = def.field ? view.versions.length : view.versions.length * QUANTILES.length;
    for (let i = 0; i < width; i++) cols.push([]);
    for (const s of samples) {
      xs.push(s.t / 1000);
      const mine = new Map();
      for (const p of s.series) if (p.route === view.route.name) mine.set(p.service + "/" + p.version, p);
      view.versions.forEach((v, n) => {
        const p = mine.get(v.service + "/" + v.version);
        if (def.field) {
          cols[n].push(p ? p[def.field] : null);
        } else {
          QUANTILES.forEach((q, k) => cols[n * QUANTILES.length + k].push(p ? p[q.key] : null));
        }
      });
    }
    return [xs].concat(cols);
  }

  /** uPlot's legend hides a series on click; this lets the keyboard do it too. */
  function keyboardLegend(plot) {
    plot.root.querySelectorAll(".u-legend .u-series").forEach((row, i) => {
      if (i === 0) return; // the time axis
      const sync = () => row.setAttribute("aria-pressed", String(plot.series[i].show !== false));
      row.setAttribute("tabindex", "0");
      row.setAttribute("role", "button");
      row.setAttribute("aria-label", plot.series[i].label + " (shown when pressed)");
      sync();
      row.addEventListener("click", () => setTimeout(sync));
      row.addEventListener("keydown", (ev) => {
        if (ev.key !== "Enter" && ev.key !== " ") return;
        ev.preventDefault();
        plot.setSeries(i, { show: plot.series[i].show === false });
        sync();
      });
    });
  }

  function updateRouteView(view) {
    view.weights.replaceChildren(el("strong", { text: "Weights: " }), weightsText(view.route));
    const last = samples.length ? samples[samples.length - 1] : null;
    for (const [key, row] of view.rows) {
      const p = last && last.series.find((s) => s.route === view.route.name && s.service + "/" + s.version === key);
      const cell = (f) => row.querySelector('[data-field="' + f + '"]');
      cell("total").textContent = p ? String(p.total) : "–";
      cell("rps").textContent = p ? fmtNumber(p.rps, 1) : "–";
      cell("error_pct").textContent = p ? fmtNumber(p.error_pct, 1) + " %" : "–";
      cell("p50_ms").textContent = p ? fmtMs(p.p50_ms) : "–";
      cell("p95_ms").textContent = p ? fmtMs(p.p95_ms) : "–";
      cell("p99_ms").textContent = p ? fmtMs(p.p99_ms) : "–";
    }
    for (const c of view.charts) {
      const data = chartData(view, c.def);
      if (!c.plot) {
        const width = Math.max(200, c.holder.clientWidth || 280);
        c.plot = new uPlot(chartOpts(c.def.title, c.def.unit, c.series, width), data, c.holder);
        keyboardLegend(c.plot);
      } else {
        c.plot.setData(data);
      }
    }
  }

  function renderInbound() {
    const inbound = status ? status.routes.filter((r) => r.kind === "inbound") : [];
    const box = $("#inbound");
    box.hidden = inbound.length === 0;
    $("#inbound-count").textContent = String(inbound.length);
    const last = samples.length ? samples[samples.length - 1] : null;
    $("#inbound tbody").replaceChildren(...inbound.map((r) => {
      const p = last && last.series.find((s) => s.route === r.name && s.service === "");
      return el("tr", {},
        el("th", { scope: "row", text: r.name.replace(/^inbound:/, "") }),
        el("td", { class: "num", text: p ? String(p.total) : "–" }),
        el("td", { class: "num", text: p ? fmtNumber(p.rps, 1) : "–" }),
        el("td", { class: "num", text: p ? fmtNumber(p.error_pct, 1) + " %" : "–" }),
        el("td", { class: "num", text: p ? fmtMs(p.p50_ms) : "–" }),
        el("td", { class: "num", text: p ? fmtMs(p.p95_ms) : "–" }),
        el("td", { class: "num", text: p ? fmtMs(p.p99_ms) : "–" }));
    }));
  }

  function renderRoutes() {
    renderInbound();
    const box = $("#routes");
    // A replica's inbound hop is summed up in one table, not charted.
    const routes = status ? status.routes.filter((r) => r.kind !== "inbound") : [];
    if (routes.length === 0) {
      box.replaceChildren(el("p", { class: "empty", text: "No routes yet." }));
      routeViews.clear();
      return;
    }
    const wanted = new Set(routes.map((r) => r.name));
    for (const [name, view] of routeViews) {
      if (!wanted.has(name)) {
        view.charts.forEach((c) => c.plot && c.plot.destroy());
        view.card.remove();
        routeViews.delete(name);
      }
    }
    if (box.querySelector(".empty")) box.replaceChildren();
    for (const route of routes) {
      let view = routeViews.get(route.name);
      const key = routeVersions(route).map((v) => v.service + "/" + v.version).join(",");
      if (view && view.key !== key) {
        view.charts.forEach((c) => c.plot && c.plot.destroy());
        const fresh = buildRouteView(route);
        view.card.replaceWith(fresh.card);
        view = fresh;
        routeViews.set(route.name, view);
      } else if (!view) {
        view = buildRouteView(route);
        box.append(view.card);
        routeViews.set(route.name, view);
      }
      view.route = route;
      updateRouteView(view);
    }
  }

  // ---- canaries ----

  function figuresTable(a, id) {
    const pct = (x) => (x * 100).toFixed(2) + " %";
    const sec = (x) => (x === null || x === undefined ? "–" : (x * 1000).toFixed(1) + " ms");
    const row = (f) => el("tr", {}, el("th", { scope: "row", text: f.version }),
      el("td", { class: "num", text: String(f.requests) }),
      el("td", { class: "num", text: pct(f.error_rate) }),
      el("td", { class: "num", text: sec(f.p99_seconds) }));
    return el("table", { "data-testid": "canary-figures-" + id },
      el("caption", { text: "Last window (" + Math.round(a.window_seconds) + " s)" }),
      el("thead", {}, el("tr", {},
        el("th", { scope: "col", text: "Version" }),
        el("th", { scope: "col", class: "num", text: "Requests" }),
        el("th", { scope: "col", class: "num", text: "Errors" }),
        el("th", { scope: "col", class: "num", text: "p99" }))),
      el("tbody", {}, row(a.baseline), row(a.canary)));
  }

  // Each check of the last window: value, range, verdict (and why not).
  function checksTable(a, id) {
    const num = (x) => (x === null || x === undefined ? "–" : String(Number(x.toPrecision(4))));
    const range = (r) => (r.min !== undefined && r.max !== undefined ? num(r.min) + " to " + num(r.max)
      : r.max !== undefined ? "≤ " + num(r.max) : "≥ " + num(r.min));
    const row = (r) => el("tr", { "data-testid": "canary-check-" + id + "-" + r.name },
      el("th", { scope: "row", text: r.name }),
      r.source.startsWith("figure ")
        ? el("td", { text: r.source.slice("figure ".length) })
        : el("td", { class: "query", text: r.source }),
      el("td", { class: "num", text: num(r.value) }),
      el("td", { text: range(r) }),
      el("td", {}, el("span", { class: "state state-" + verdictClass(r.verdict), text: r.verdict })),
      el("td", { class: "hint", text: r.reason || "" }));
    return el("div", { class: "scroll-x" }, el("table", { class: "checks", "data-testid": "canary-checks-" + id },
      el("caption", { text: "Checks of the last window" }),
      el("thead", {}, el("tr", {}, ...["Check", "Source", "Value", "Range", "Verdict", "Why"].map((t) => el("th", { scope: "col", text: t })))),
      el("tbody", {}, ...a.checks.map(row))));
  }

  // What holds a canary: a gate's webhooks and their last answer, or the approval.
  function waitingText(w) {
    const hooks = (w.hooks || []).map((h) => "`" + h + "`").join(", ");
    return w.gate + (hooks ? " " + hooks : "") + " (" + w.last_answer + ")";
  }

  function renderCanaries() {
    const box = $("#canaries");
    const list = status && status.canaries ? status.canaries : [];
    if (list.length === 0) {
      box.replaceChildren(el("p", { class: "empty", text: status && status.canaries === null ? "No canary controller in this process." : "No canary." }));
      return;
    }
    box.replaceChildren(...list.map((c) => {
      const id = slug(c.service);
      const weights = Object.entries(c.weights || {}).map(([v, w]) => v + " " + w + "%").join(" · ");
      const a = c.last_analysis;
      const dl = el("dl", {},
        el("dt", { text: "Phase" }), el("dd", {}, el("span", { class: "state state-" + c.phase, "data-testid": "canary-phase-" + id, text: c.phase })),
        el("dt", { text: "Step" }), el("dd", { "data-testid": "canary-step-" + id, text: c.step_label }),
        ...(c.waiting ? [el("dt", { text: "Waiting for" }), el("dd", { "data-testid": "canary-waiting-" + id, text: waitingText(c.waiting) })] : []),
        el("dt", { text: "Weights" }), el("dd", { "data-testid": "canary-weights-" + id, text: weights }),
        el("dt", { text: "Failed checks" }), el("dd", { text: String(c.failures) }),
        el("dt", { text: "Last verdict" }), el("dd", { "data-testid": "canary-verdict-" + id }, a ? el("span", { class: "state state-" + verdictClass(a.verdict), text: String(a.verdict) }) : "none yet"),
        el("dt", { text: "Window ends" }), el("dd", { text: c.window_ends_at ? fmtTime(Date.parse(c.window_ends_at)) : "–" }),
        el("dt", { text: "Note" }), el("dd", { text: c.message || "–" }));
      return el("article", { class: "canary", "aria-labelledby": "canary-" + id, "data-testid": "canary-" + id },
        el("h3", { id: "canary-" + id, text: c.service + ": " + c.baseline + " → " + c.canary }),
        dl,
        a ? figuresTable(a, id) : null,
        a && a.checks && a.checks.length ? checksTable(a, id) : null,
        a && a.reasons && a.reasons.length ? el("p", { class: "hint", text: a.reasons.join("; ") }) : null);
    }));
  }

  function verdictClass(v) {
    const s = String(v).toLowerCase();
    if (s.startsWith("pass")) return "Pass";
    if (s.startsWith("fail")) return "Fail";
    return "Inconclusive";
  }

  // ---- recent changes ----

  function renderChanges() {
    const items = [];
    for (const e of (status && status.events) || []) {
      items.push({ t: e.unix_ms, kind: e.kind, text: e.message });
    }
    for (const d of (status && status.decisions) || []) {
      const t = Date.parse(d.time);
      const weights = (w) => Object.entries(w || {}).map(([v, p]) => v + " " + p + "%").join(" · ");
      const moved = JSON.stringify(d.from) !== JSON.stringify(d.to) ? " (" + weights(d.from) + " → " + weights(d.to) + ")" : "";
      items.push({ t: Number.isNaN(t) ? 0 : t, kind: "canary " + d.decision, text: d.service + ": " + d.message + moved });
    }
    items.sort((a, b) => b.t - a.t);
    const list = $("#changes");
    if (items.length === 0) {
      list.replaceChildren(el("li", { class: "empty", text: "Nothing changed since serin started." }));
      return;
    }
    list.replaceChildren(...items.slice(0, 40).map((i) => el("li", {},
      el("time", { datetime: new Date(i.t).toISOString(), text: fmtTime(i.t) }),
      el("span", { class: "kind", text: i.kind }),
      i.text)));
  }

  // ---- mesh ----

  function renderMesh() {
    const box = $("#mesh");
    const routes = status ? status.routes : [];
    const last = samples.length ? samples[samples.length - 1] : null;
    const rps = new Map();
    for (const p of last ? last.series : []) {
      if (p.service === "") continue;
      const k = p.route + "|" + p.service;
      rps.set(k, (rps.get(k) || 0) + p.rps);
    }
    const edges = new Map();
    for (const r of routes) {
      if (r.kind === "inbound") continue;
      const services = new Set(r.rules.flatMap((rule) => rule.backends.map((b) => b.service)));
      for (const s of services) {
        const k = r.caller + ">" + s;
        const e = edges.get(k) || { from: r.caller, to: s, rps: 0, routes: [] };
        e.rps += rps.get(r.name + "|" + s) || 0;
        e.routes.push(r.name);
        edges.set(k, e);
      }
      for (const c of r.side_calls || []) {
        const k = r.caller + ">" + c.service;
        if (edges.has(k)) continue;
        edges.set(k, { from: r.caller, to: c.service, rps: null, why: c.why, routes: [r.name] });
      }
    }
    if (edges.size === 0) {
      box.replaceChildren(el("p", { class: "empty", text: "No routes." }));
      return;
    }
    // Columns by distance from the gateway (callers left of callees).
    const depth = new Map([["gateway", 0]]);
    for (let pass = 0; pass < 8; pass++) {
      for (const e of edges.values()) {
        const d = depth.has(e.from) ? depth.get(e.from) : 0;
        if (!depth.has(e.from)) depth.set(e.from, 0);
        if (!depth.has(e.to) || depth.get(e.to) < d + 1) depth.set(e.to, Math.min(d + 1, 6));
      }
    }
    const columns = new Map();
    for (const [n, d] of depth) {
      if (![...edges.values()].some((e) => e.from === n || e.to === n)) continue;
      if (!columns.has(d)) columns.set(d, []);
      columns.get(d).push(n);
    }
    const NW = 100, NH = 30, GX = 56, GY = 20;
    const pos = new Map();
    let height = 0;
    for (const [d, names] of [...columns.entries()].sort((a, b) => a[0] - b[0])) {
      names.sort().forEach((n, i) => pos.set(n, { x: 10 + d * (NW + GX), y: 10 + i * (NH + GY) }));
      height = Math.max(height, 10 + names.length * (NH + GY));
    }
    const width = 10 + Math.max(...[...pos.values()].map((p) => p.x)) + NW + 10;
    const NS = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("viewBox", "0 0 " + width + " " + height);
    // Natural size, shrunk to fit when the column is narrower.
    svg.setAttribute("width", width);
    svg.setAttribute("role", "img");
    svg.setAttribute("aria-labelledby", "mesh-heading");
    const mk = (tag, attrs, text) => {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
      if (text !== undefined) e.textContent = text;
      return e;
    };
    const defs = mk("defs", {});
    const marker = mk("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse" });
    marker.append(mk("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#4a5360" }));
    defs.append(marker);
    svg.append(defs);
    for (const e of edges.values()) {
      const a = pos.get(e.from), b = pos.get(e.to);
      if (!a || !b) continue;
      const g = mk("g", { class: "edge" });
      const x1 = a.x + NW, y1 = a.y + NH / 2, x2 = b.x, y2 = b.y + NH / 2;
      g.append(mk("line", { x1, y1, x2: x2 - 2, y2, "marker-end": "url(#arrow)" }));
      // Nearer the callee than the caller, so a caller's fan-out labels
      // do not overlap.
      g.append(mk("text", { x: x1 + 0.6 * (x2 - x1), y: y1 + 0.6 * (y2 - y1) - 5, "text-anchor": "middle" }, edgeLabel(e)));
      g.append(mk("title", {}, e.from + " calls " + e.to + " (" + e.routes.join(", ") + ")"));
      svg.append(g);
    }
    for (const [n, p] of pos) {
      const g = mk("g", { class: "node" });
      g.append(mk("rect", { x: p.x, y: p.y, width: NW, height: NH, rx: 5 }));
      g.append(mk("text", { x: p.x + NW / 2, y: p.y + NH / 2 + 4, "text-anchor": "middle" }, n));
      svg.append(g);
    }
    // The same as a list, for screen readers.
    const list = el("ul", { class: "visually-hidden" },
      ...[...edges.values()].map((e) => el("li", { text: e.from + " calls " + e.to + ", " + (e.rps === null ? e.why : e.rps.toFixed(1) + " requests per second") })));
    box.replaceChildren(svg, list);
  }

  function edgeLabel(e) {
    return e.rps === null ? e.why : e.rps.toFixed(1) + "/s";
  }

  // ---- endpoints and replicas ----

  function renderEndpoints() {
    const body = $("#endpoints tbody");
    const eps = (status && status.endpoints) || [];
    if (eps.length === 0) {
      body.replaceChildren(el("tr", {}, el("td", { colspan: "6", class: "empty", text: "No endpoints." })));
    } else {
      body.replaceChildren(...eps.map((e) => el("tr", {},
        el("td", { text: e.service }),
        el("td", { text: e.version }),
        el("td", { text: e.address }),
        el("td", { text: e.name }),
        el("td", {}, el("span", { class: "state state-" + e.state, text: e.state + (e.state === "ejected" ? " (" + Math.ceil(e.ejected_for_ms / 1000) + " s)" : "") })),
        el("td", { class: "num", text: String(e.active_requests) }))));
    }
    const table = $("#replicas");
    const reps = status && status.replicas;
    table.hidden = !reps;
    if (!reps) return;
    table.querySelector("tbody").replaceChildren(...reps.map((r) => el("tr", {},
      el("th", { scope: "row", text: r.name }),
      el("td", { text: r.service + "/" + r.version }),
      el("td", {}, el("span", { class: "state state-" + r.state, text: r.state })),
      el("td", { text: r.ready ? "yes" : "no" }),
      el("td", { class: "num", text: String(r.restarts) }),
      el("td", { class: "num", text: r.port ? String(r.port) : "–" }),
      el("td", { text: r.message || "" }))));
  }

  // ---- explain ----

  // ---- live tap ----

  const TAP_RATE = 20;
  const TAP_ROWS = 50;
  let tapping = null;

  function tapRow(e) {
    return el("tr", {},
      el("td", { text: fmtTime(e.unix_ms) }),
      el("td", { text: e.method }),
      el("td", { class: "query", text: e.path }),
      el("td", { class: "num", text: String(e.status) }),
      el("td", { class: "num", text: fmtMs(e.latency_ms) }),
      el("td", { text: e.route || "–" }),
      el("td", { text: e.service ? e.service + "/" + e.version : "–" }),
      el("td", { text: e.endpoint || "–" }),
      el("td", { class: "num", text: String(e.retries) }));
  }

  async function runTap(q, stop) {
    const state = $("#tap-state");
    const body = $("#tap-lines tbody");
    const resp = await fetch("/ui/tap?" + q, { signal: stop.signal, cache: "no-store" });
    if (!resp.ok) {
      state.textContent = "Cannot tap: " + ((await resp.json()).error || resp.status);
      return;
    }
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += decoder.decode(value, { stream: true });
      let nl;
      while ((nl = pending.indexOf("\n")) >= 0) {
        const item = JSON.parse(pending.slice(0, nl));
        pending = pending.slice(nl + 1);
        if (item.kind === "tapping") state.textContent = "Tapping.";
        else if (item.kind === "dropped") state.textContent = "Tapping; " + item.count + " requests not shown (over the rate).";
        else if (item.kind === "request") {
          body.prepend(tapRow(item));
          while (body.rows.length > TAP_ROWS) body.deleteRow(-1);
        }
      }
    }
  }

  $("#tap").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const toggle = $("#tap-toggle");
    if (tapping) {
      tapping.abort();
      tapping = null;
      toggle.textContent = "Start";
      $("#tap-state").textContent = "Stopped.";
      return;
    }
    const form = new FormData(ev.target);
    const q = new URLSearchParams({ rate: String(TAP_RATE) });
    for (const k of ["route", "service", "status", "path_prefix"]) {
      const v = String(form.get(k) || "").trim();
      if (v) q.append(k, v);
    }
    if (token) q.append("token", token);
    tapping = new AbortController();
    toggle.textContent = "Stop";
    const mine = tapping;
    runTap(q, mine).catch((e) => {
      if (mine.signal.aborted) return;
      $("#tap-state").textContent = "The tap ended: " + e.message;
    });
  });

  $("#explain").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = new FormData(ev.target);
    const q = new URLSearchParams();
    for (const k of ["method", "path", "host", "listener"]) {
      const v = String(form.get(k) || "").trim();
      if (v) q.append(k, v);
    }
    for (const line of String(form.get("headers") || "").split("\n")) {
      if (line.trim()) q.append("header", line.trim());
    }
    if (token) q.append("token", token);
    const out = $("#explain-result");
    try {
      const resp = await fetch("/ui/explain?" + q, { cache: "no-store" });
      const body = await resp.json();
      out.textContent = resp.ok ? body.text : "Cannot explain: " + body.error;
    } catch (e) {
      out.textContent = "Cannot explain: " + e.message;
    }
  });

  function render() {
    renderRoutes();
    renderCanaries();
    renderChanges();
    renderMesh();
    renderEndpoints();
    const last = samples.length ? samples[samples.length - 1] : null;
    if (last) {
      const t = $("#updated");
      t.dateTime = new Date(last.t).toISOString();
      t.textContent = fmtTime(last.t);
    }
  }

  // ---- data ----

  async function loadState() {
    const resp = await fetch("/ui/state" + query, { cache: "no-store" });
    if (!resp.ok) throw new Error("GET /ui/state: " + resp.status);
    const body = await resp.json();
    samples = body.history.slice(-HISTORY);
    status = body.status;
    render();
  }

  function follow() {
    const source = new EventSource("/ui/events" + query);
    let broken = false;
    source.addEventListener("open", () => {
      setConnection("live", "Live");
      // After a break the history has a hole: fetch it again.
      if (broken) loadState().catch(() => {});
      broken = false;
    });
    source.addEventListener("error", () => {
      broken = true;
      setConnection("reconnecting", "Connection lost, reconnecting…");
    });
    source.addEventListener("update", (ev) => {
      const u = JSON.parse(ev.data);
      samples.push(u.sample);
      if (samples.length > HISTORY) samples.splice(0, samples.length - HISTORY);
      status = u.status;
      render();
    });
  }

  window.addEventListener("resize", () => {
    for (const view of routeViews.values()) {
      for (const c of view.charts) {
        if (c.plot) c.plot.setSize({ width: Math.max(200, c.holder.clientWidth), height: 150 });
      }
    }
  });

  loadState()
    .catch((e) => setConnection("reconnecting", "Cannot load the dashboard's data: " + e.message))
    .finally(follow);
})();
