// gmesh dashboard: one EventSource (/api/events) feeds the whole page. The
// first event ("snapshot") carries the state and its history; each "update"
// carries the next state and one history point. window.__gmesh exposes the
// page's state for browser tests.

const COLORS = ["#2f6fde", "#e8711a", "#1a9a55", "#9b4dd6", "#d33a3a", "#0f9aa8"];

const g = (window.__gmesh = {
  state: null,     // the last State
  history: [],     // Points, oldest first
  selected: "",    // the service key the chart and rollout panel show
  connection: "connecting",
  events: 0,       // events received
  lastAction: null, // {action, service, ok, status, error}
  // series returns the chart's data for a service: {t: [...], versions: {v: {share, weight, rps, success}}}.
  series: (key) => seriesOf(key || g.selected),
});

const $ = (id) => document.getElementById(id);

// ---- DOM helpers (no innerHTML: everything shown is text) ----

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  setAttrs(e, attrs);
  for (const k of kids.flat()) {
    if (k == null || k === false) continue;
    e.append(k instanceof Node ? k : String(k));
  }
  return e;
}

function svgEl(tag, attrs) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  setAttrs(e, attrs);
  return e;
}

function setAttrs(e, attrs) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k === "class") e.setAttribute("class", v);
    else if (k === "text") e.textContent = v;
    else if (k === "color") e.style.setProperty("--c", v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : String(v));
  }
}

const pct = (x, digits = 0) => (x == null ? "—" : (x * 100).toFixed(digits) + "%");
const num = (x, digits = 1) => (x == null ? "—" : Number(x).toFixed(digits));
const when = (t) => (t && new Date(t).getFullYear() > 2000 ? " at " + hhmmss(t) : "");
const hhmmss = (t) => {
  const d = new Date(t);
  return isNaN(d) ? "" : d.toLocaleTimeString([], { hour12: false });
};

// colorOf gives each version of a service a color it keeps for the page's
// life, so a retired version's history and its successor never share one.
const versionColors = new Map();
function colorOf(svc, version) {
  const key = (svc ? svc.key : "") + "\u0000" + version;
  if (!versionColors.has(key)) {
    const prefix = (svc ? svc.key : "") + "\u0000";
    let n = 0;
    for (const k of versionColors.keys()) if (k.startsWith(prefix)) n++;
    versionColors.set(key, COLORS[n % COLORS.length]);
  }
  return versionColors.get(key);
}

// ---- the event stream ----

let es = null;
let lastEventAt = 0;

function connect() {
  if (es) es.close();
  setConnection("connecting");
  es = new EventSource("/api/events");
  es.addEventListener("open", () => setConnection("open"));
  es.addEventListener("error", () => {
    // The browser reconnects by itself while readyState is CONNECTING; a
    // CLOSED source (an HTTP error) is reopened here, slowly.
    if (es.readyState === EventSource.CLOSED) {
      setConnection("closed");
      setTimeout(connect, 5000);
    } else {
      setConnection("connecting");
    }
  });
  es.addEventListener("snapshot", (ev) => {
    const s = JSON.parse(ev.data);
    g.history = s.history || [];
    delete s.history;
    apply(s);
  });
  es.addEventListener("update", (ev) => {
    const s = JSON.parse(ev.data);
    if (s.point) {
      g.history.push(s.point);
      const from = s.point.t - (s.historyMillis || 300000);
      while (g.history.length && g.history[0].t < from) g.history.shift();
    }
    apply(s);
  });
}

function setConnection(state) {
  g.connection = state;
  const c = $("conn");
  c.dataset.state = state;
  $("conn-text").textContent = { open: "live", connecting: "connecting…", closed: "disconnected", stale: "stale" }[state] || state;
}

// A stream that stays open but silent (a stuck proxy) shows as stale.
setInterval(() => {
  const iv = (g.state && g.state.intervalMillis) || 1000;
  if (g.connection === "open" && lastEventAt && Date.now() - lastEventAt > Math.max(5 * iv, 5000)) setConnection("stale");
}, 1000);

function apply(s) {
  g.state = s;
  g.events++;
  lastEventAt = Date.now();
  if (g.connection === "stale") setConnection("open");
  // Follow the service with an active rollout until the user picks one.
  if (!g.userSelected || !s.services.some((x) => x.key === g.selected)) g.selected = defaultService(s);
  render();
}

// defaultService: the one with an active rollout, else with most versions.
function defaultService(s) {
  const active = s.services.find((x) => x.rollout && x.rollout.active);
  if (active) return active.key;
  const withRollout = s.services.find((x) => x.rollout);
  if (withRollout) return withRollout.key;
  const sorted = [...s.services].sort((a, b) => b.versions.length - a.versions.length);
  return sorted.length ? sorted[0].key : "";
}

function selectService(key) {
  g.selected = key;
  g.userSelected = true;
  render();
}

function render() {
  const s = g.state;
  if (!s) return;
  renderHeader(s);
  renderTopology(s);
  renderTabs(s);
  renderCharts(s);
  renderRollout(s);
  renderClients(s);
  renderHistory(s);
}

// ---- header ----

function renderHeader(s) {
  $("mesh-name").textContent = s.meshes.length ? "mesh " + s.meshes.join(", ") : "no mesh";
  $("revision").textContent = `rev ${s.revision} · published ${s.publishedRevision}`;
  $("last-update").textContent = s.time ? "updated " + hhmmss(s.time) : "";
  const problems = [];
  if (!s.connected && s.error) problems.push("Control plane unreachable: " + s.error);
  if (s.ca && Date.parse(s.ca.notAfter) <= Date.now()) problems.push(`The mesh CA expired at ${s.ca.notAfter}: no certificate can be issued or renewed; replace the CA.`);
  if (s.translateError) problems.push("The stored mesh does not translate (the previous config keeps serving): " + s.translateError);
  const b = $("banner");
  b.hidden = problems.length === 0;
  b.textContent = problems.join(" — ");
}

// ---- topology ----

function renderTopology(s) {
  const root = $("topology");
  const rows = [];
  const byVS = new Map(s.services.filter((x) => x.virtualService).map((x) => [x.mesh + "/" + x.virtualService, x]));
  for (const gw of s.gateways) {
    const targets = gw.routes.map((r) =>
      el("div", { class: "small" }, el("span", { class: "mono" }, r.match || ""), " → ", r.virtualService, r.service ? ` (${r.service})` : ""));
    rows.push(el("div", { class: "topo-row", "data-gateway": gw.name },
      el("div", { class: "box gateway" },
        el("div", { class: "kind", text: "virtual gateway" }),
        el("div", { class: "name", text: gw.name }),
        el("div", { class: "small muted gateway-listen", text: gw.listen || ((gw.address || "127.0.0.1") + (gw.ports && gw.ports.length ? ":" + gw.ports.join(",") : "")) })),
      el("span", { class: "arrow", text: "→" }),
      el("div", { class: "box" }, el("div", { class: "kind", text: "gateway routes" }), targets.length ? targets : el("div", { class: "muted small", text: "none" }))));
  }
  // Services reached from a gateway first, then the services they call.
  const order = [];
  const seen = new Set();
  const visit = (sv) => {
    if (!sv || seen.has(sv.key)) return;
    seen.add(sv.key);
    order.push(sv);
    for (const b of sv.backends || []) visit(byVS.get(sv.mesh + "/" + b));
  };
  for (const gw of s.gateways) for (const r of gw.routes) visit(byVS.get(gw.mesh + "/" + r.virtualService));
  for (const sv of s.services) visit(sv);
  for (const sv of order) rows.push(serviceRow(sv));
  if (!rows.length) rows.push(el("p", { class: "muted", text: "Nothing registered yet." }));
  root.replaceChildren(...rows);
}

function serviceRow(sv) {
  const parts = [];
  parts.push(el("div", { class: "box service" },
    el("div", { class: "kind", text: "service" }),
    el("div", { class: "name", text: sv.name }),
    el("div", { class: "small muted", text: `${num(sv.rps, 1)} rps` }),
    sv.backends && sv.backends.length ? el("div", { class: "small muted", text: "calls " + sv.backends.join(", ") }) : null));
  if (sv.virtualService) {
    parts.push(el("span", { class: "arrow", text: "→" }));
    parts.push(el("div", { class: "box vs" }, el("div", { class: "kind", text: "virtual service" }), el("div", { class: "name", text: sv.virtualService })));
  }
  if (sv.router) {
    parts.push(el("span", { class: "arrow", text: "→" }));
    parts.push(el("div", { class: "box router" },
      el("div", { class: "kind", text: "virtual router" }),
      el("div", { class: "name", text: sv.router }),
      el("div", { class: "small muted", text: "route " + sv.route })));
  }
  parts.push(el("span", { class: "arrow", text: "→" }));
  const versions = sv.versions.map((v) => {
    const color = colorOf(sv, v.version);
    const w = v.weight;
    return el("div", { class: "version", color, "data-version": v.version, "data-weight": w == null ? "" : w },
      el("div", { class: "vhead" },
        el("span", { class: "vname", text: v.version }),
        el("span", { class: "muted small mono", text: v.virtualNode || "" }),
        w != null ? el("span", { class: "weightbar", title: "route weight" }, widthSpan(w)) : null,
        w != null ? el("span", { class: "small", text: "weight " + pct(w) }) : null,
        el("span", { class: "small muted", text: `share ${pct(v.share)} · ${num(v.rps, 1)} rps` }),
        v.draining ? el("span", { class: "small warn", text: "draining" }) : null),
      el("div", { class: "tasks" }, v.tasks.map(taskRow)));
  });
  parts.push(el("div", { class: "versions" }, versions.length ? versions : el("div", { class: "muted small", text: "no versions" })));
  return el("div", { class: "topo-row", "data-service": sv.name, "data-mesh": sv.mesh }, parts);
}

function widthSpan(w) {
  const s = el("span");
  s.style.width = Math.max(0, Math.min(1, w)) * 100 + "%";
  return s;
}

function taskRow(t) {
  const notes = [];
  if (t.restarts) notes.push(el("span", { class: "warn", text: `${t.restarts} restart${t.restarts === 1 ? "" : "s"}` }));
  if (t.state !== "RUNNING") notes.push(el("span", { class: "muted", text: t.state.toLowerCase() }));
  if (t.draining) notes.push(el("span", { class: "warn", text: "draining" }));
  if (t.scrapeError) notes.push(el("span", { class: "warn", title: t.scrapeError, text: "no metrics" }));
  const c = t.certificate;
  if (c && c.notAfter && Date.parse(c.notAfter) <= Date.now()) {
    notes.push(el("span", { class: "warn", "data-cert": "expired", title: `${c.id} expired at ${c.notAfter}`, text: "certificate expired" }));
  } else if (c && c.failures) {
    notes.push(el("span", { class: "warn", "data-cert": "renewal-failed", title: c.lastError || "", text: `certificate renewal failed ${c.failures}×` }));
  } else if (c) {
    notes.push(el("span", { class: "muted", "data-cert": "ok", title: `${c.id}, renewed ${c.renewals || 0}×, next at ${c.renewAt}`, text: `cert until ${c.notAfter.slice(11, 19)}Z` }));
  }
  return el("div", {
    class: "task", "data-task-id": t.id, "data-health": t.health, "data-state": t.state,
    "data-restarts": t.restarts, "data-draining": t.draining ? "true" : "false",
    title: t.lastHealthError || `${t.health.toLowerCase()}${t.pid ? ", pid " + t.pid : ""}`,
  },
  el("span", { class: "hdot" }),
  el("span", { class: "id", text: t.id }),
  el("span", { class: "muted", text: `${t.address}:${t.port}` }),
  el("span", { class: "muted", text: `${num(t.rps, 1)} rps` }),
  notes);
}

// ---- charts ----

function renderTabs(s) {
  const tabs = s.services
    .filter((x) => x.versions.length)
    .map((x) => el("button", {
      type: "button", role: "tab", "data-service": x.key,
      "aria-selected": x.key === g.selected ? "true" : "false",
      onclick: () => selectService(x.key),
    }, x.name));
  $("chart-tabs").replaceChildren(...tabs);
}

function seriesOf(key) {
  const out = { service: key, t: [], versions: {} };
  const sv = g.state && g.state.services.find((x) => x.key === key);
  const names = new Set(sv ? sv.versions.map((v) => v.version) : []);
  for (const p of g.history) for (const v of Object.keys((p.s && p.s[key]) || {})) names.add(v);
  for (const v of names) out.versions[v] = { share: [], weight: [], rps: [], success: [] };
  for (const p of g.history) {
    out.t.push(p.t);
    const vs = (p.s && p.s[key]) || {};
    for (const v of names) {
      const x = vs[v];
      const s = out.versions[v];
      s.share.push(x ? x.share : null);
      s.weight.push(x ? x.weight : null);
      s.rps.push(x ? x.rps : null);
      s.success.push(x ? x.success : null);
    }
  }
  // smoothShare: the share over the last SMOOTH polls (requests of the
  // version / requests of all), which the chart draws; share is per poll.
  const n = out.t.length;
  for (const v of names) out.versions[v].smoothShare = new Array(n).fill(null);
  for (let i = 0; i < n; i++) {
    let all = 0;
    const per = {};
    for (const v of names) {
      per[v] = 0;
      for (let j = Math.max(0, i - SMOOTH + 1); j <= i; j++) per[v] += out.versions[v].rps[j] || 0;
      all += per[v];
    }
    if (all > 0) for (const v of names) if (out.versions[v].rps[i] != null) out.versions[v].smoothShare[i] = per[v] / all;
  }
  return out;
}

const SMOOTH = 5;

function renderCharts(s) {
  const sv = s.services.find((x) => x.key === g.selected);
  const data = seriesOf(g.selected);
  const chart = $("share-chart");
  chart.dataset.service = g.selected;
  chart.dataset.series = JSON.stringify(data);
  const windowMs = s.historyMillis || 300000;
  const names = Object.keys(data.versions);
  const color = (v) => colorOf(sv, v);
  drawChart(chart, data.t, windowMs, names.flatMap((v) => [
    { values: data.versions[v].weight, color: color(v), cls: "weight" },
    { values: data.versions[v].smoothShare, color: color(v), cls: "series" },
  ]), { min: 0, max: 1, ticks: [0, 0.25, 0.5, 0.75, 1], fmt: (x) => pct(x) });
  const maxRps = Math.max(1, ...names.flatMap((v) => data.versions[v].rps.filter((x) => x != null)));
  drawChart($("rps-chart"), data.t, windowMs, names.map((v) => ({ values: data.versions[v].rps, color: color(v), cls: "series" })),
    { min: 0, max: niceMax(maxRps), ticks: [0, niceMax(maxRps) / 2, niceMax(maxRps)], fmt: (x) => (x === 0 ? "0" : num(x, x < 10 ? 1 : 0)) });
  const minSr = Math.min(0.9, ...names.flatMap((v) => data.versions[v].success.filter((x) => x != null)));
  const lo = Math.floor(minSr * 20) / 20;
  drawChart($("success-chart"), data.t, windowMs, names.map((v) => ({ values: data.versions[v].success, color: color(v), cls: "series" })),
    { min: lo, max: 1, ticks: [lo, (lo + 1) / 2, 1], fmt: (x) => pct(x, lo > 0.9 ? 1 : 0) });

  const legend = names.map((v) => {
    const vv = sv && sv.versions.find((x) => x.version === v);
    const sm = data.versions[v].smoothShare;
    return el("span", { "data-version": v },
      el("span", { class: "sw", color: color(v) }),
      `${v}: share `, el("b", { text: pct(sm.length ? sm[sm.length - 1] : null, 1) }),
      ` · weight `, el("b", { text: pct(vv && vv.weight) }),
      ` · `, el("b", { text: num(vv && vv.rps, 1) }), ` rps · success `, el("b", { text: pct(vv && vv.successRate, 1) }));
  });
  $("share-legend").replaceChildren(...legend);
}

function niceMax(x) {
  const p = Math.pow(10, Math.floor(Math.log10(x)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= x) return m * p;
  return 10 * p;
}

// drawChart draws lines over a time window ending at the last point; a null
// value breaks a line.
function drawChart(svg, ts, windowMs, lines, y) {
  const W = Math.max(200, svg.clientWidth || 600);
  const H = Math.max(60, svg.clientHeight || 120);
  const L = 44, R = 8, T = 8, B = 18;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const kids = [];
  const tEnd = ts.length ? ts[ts.length - 1] : Date.now();
  const tStart = tEnd - windowMs;
  const X = (t) => L + ((t - tStart) / windowMs) * (W - L - R);
  const Y = (v) => T + (1 - (v - y.min) / (y.max - y.min || 1)) * (H - T - B);
  for (const tick of y.ticks) {
    kids.push(svgEl("line", { class: "grid-line", x1: L, x2: W - R, y1: Y(tick), y2: Y(tick) }));
    const lab = svgEl("text", { class: "axis-label", x: L - 6, y: Y(tick) + 3.5, "text-anchor": "end" });
    lab.textContent = y.fmt(tick);
    kids.push(lab);
  }
  const minutes = Math.round(windowMs / 60000);
  const step = minutes > 0 ? 60000 : windowMs / 4;
  for (let dt = 0; dt <= windowMs + 1; dt += step) {
    const lab = svgEl("text", { class: "axis-label", x: X(tEnd - dt), y: H - 4, "text-anchor": dt === 0 ? "end" : "middle" });
    lab.textContent = dt === 0 ? "now" : `-${Math.round(dt / 1000) >= 60 ? Math.round(dt / 60000) + "m" : Math.round(dt / 1000) + "s"}`;
    kids.push(lab);
  }
  let any = false;
  for (const line of lines) {
    let d = "";
    let pen = false;
    for (let i = 0; i < ts.length; i++) {
      const v = line.values[i];
      if (v == null || ts[i] < tStart) { pen = false; continue; }
      const c = Math.max(y.min, Math.min(y.max, v));
      d += `${pen ? "L" : "M"}${X(ts[i]).toFixed(1)},${Y(c).toFixed(1)}`;
      pen = true;
      any = true;
    }
    if (d) kids.push(svgEl("path", { class: line.cls, d, stroke: line.color }));
  }
  if (!any) {
    const t = svgEl("text", { class: "empty", x: (L + W - R) / 2, y: H / 2, "text-anchor": "middle" });
    t.textContent = "no traffic yet";
    kids.push(t);
  }
  svg.replaceChildren(...kids);
}

// ---- rollout panel ----

const ACTIONS = ["pause", "resume", "promote", "abort"];

function renderRollout(s) {
  const sv = s.services.find((x) => x.key === g.selected);
  const ro = sv && sv.rollout;
  const panel = $("rollout-panel");
  panel.dataset.service = sv ? sv.name : "";
  panel.dataset.mesh = sv ? sv.mesh : "";
  panel.dataset.active = ro && ro.active ? "true" : "false";
  $("rollout-service").textContent = sv ? sv.name : "";
  $("rollout-none").hidden = !!ro;
  $("rollout-body").hidden = !ro;
  const phase = $("rollout-phase");
  phase.textContent = ro ? ro.status.phase + (ro.status.paused && ro.status.phase !== "Paused" ? " (pausing)" : "") : "—";
  phase.dataset.phase = ro ? ro.status.phase : "";
  for (const a of ACTIONS) {
    const b = $("btn-" + a);
    b.dataset.service = sv ? sv.name : "";
    b.dataset.mesh = sv ? sv.mesh : "";
    b.disabled = !(ro && ro.actions && ro.actions[a]) || b.getAttribute("aria-busy") === "true";
  }
  if (!ro) {
    $("rollout-events").replaceChildren();
    return;
  }
  const st = ro.status;
  const spec = ro.spec || {};
  $("rollout-versions").textContent = `${st.oldVersion || "?"} → ${st.newVersion || (spec.target && spec.target.version) || "?"}` + (spec.rollback ? " (rollback)" : "");
  $("rollout-step").textContent = `${ro.step}/${ro.steps}`;
  $("rollout-weight").textContent = `${st.weight}%`;
  $("rollout-steps").replaceChildren(...(spec.steps || []).map((w, i) =>
    el("span", { class: i < st.stepIndex ? "done" : i === st.stepIndex ? "current" : "", text: w + "%" })));
  $("rollout-message").textContent = st.message || "";
  $("rollout-reason").hidden = !st.reason;
  $("rollout-reason").textContent = st.reason || "";
  const gates = spec.gates || {};
  const an = st.analysis;
  gateRow("gate-success", an && pct(an.successRate, 2), "≥ " + pct(gates.minSuccessRate, 1), an && an.judged ? an.successRate >= gates.minSuccessRate : null);
  gateRow("gate-p99", an && num(an.p99Millis, 1) + " ms", "≤ " + num(gates.maxP99Millis, 0) + " ms", an && an.judged ? an.p99Millis <= gates.maxP99Millis : null);
  gateRow("gate-requests", an && String(an.requests) + (an.errors ? ` (${an.errors} errors)` : ""), "≥ " + (gates.minRequests ?? "—"), an ? an.requests >= gates.minRequests : null);
  $("gate-detail").textContent = an ? (an.detail || (an.judged ? (an.passed ? "passed" : "failed") : "too few requests to judge yet")) : "no analysis yet";
  const evs = (st.events || []).slice().reverse();
  $("rollout-events").replaceChildren(...evs.map((e) =>
    el("li", {}, el("span", { class: "t", text: hhmmss(e.time) }), el("span", { class: "phase-name", text: e.phase }), el("span", { text: e.message }))));
}

function gateRow(id, value, threshold, pass) {
  const tr = $(id);
  tr.dataset.pass = pass == null ? "" : String(pass);
  tr.querySelector(".v").textContent = value || "—";
  tr.querySelector(".t").textContent = threshold;
  tr.querySelector(".p").textContent = pass == null ? "" : pass ? "pass" : "fail";
}

// Token: from the URL fragment (#token=...) once, kept for the tab's life.
(function takeToken() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("gmesh-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
})();

async function control(action, button) {
  const meshName = button.dataset.mesh, service = button.dataset.service;
  if (!service) return;
  if (action === "abort" && button.dataset.armed !== "true") {
    // Abort rolls back: ask for a second click.
    button.dataset.armed = "true";
    button.textContent = "Confirm abort";
    setTimeout(() => { button.dataset.armed = "false"; button.textContent = "Abort"; }, 4000);
    return;
  }
  button.dataset.armed = "false";
  if (action === "abort") button.textContent = "Abort";
  button.setAttribute("aria-busy", "true");
  button.disabled = true;
  const result = $("action-result");
  result.dataset.status = "pending";
  result.textContent = `${action} ${service}…`;
  try {
    let resp = await post(meshName, service, action);
    if (resp.status === 401) {
      const tok = prompt("The dashboard needs the admin API's token:");
      if (tok) {
        sessionStorage.setItem("gmesh-token", tok);
        resp = await post(meshName, service, action);
      }
    }
    let body = {};
    try { body = await resp.json(); } catch { /* not JSON */ }
    const ok = resp.ok;
    g.lastAction = { action, service, mesh: meshName, ok, status: resp.status, error: ok ? "" : body.error || resp.statusText };
    result.dataset.status = ok ? "ok" : "error";
    result.textContent = ok
      ? `${action}: accepted` + (body.rollout && body.rollout.status ? ` — ${body.rollout.status.message || body.rollout.status.phase}` : "")
      : `${action} failed (${resp.status}): ${g.lastAction.error}`;
  } catch (err) {
    g.lastAction = { action, service, mesh: meshName, ok: false, status: 0, error: String(err) };
    result.dataset.status = "error";
    result.textContent = `${action} failed: ${err}`;
  } finally {
    button.removeAttribute("aria-busy");
    if (g.state) renderRollout(g.state);
  }
}

function post(meshName, service, action) {
  const headers = { "X-Gmesh": "1" };
  const tok = sessionStorage.getItem("gmesh-token");
  if (tok) headers.Authorization = "Bearer " + tok;
  return fetch(`/api/rollouts/${encodeURIComponent(meshName)}/${encodeURIComponent(service)}/${action}`, { method: "POST", headers });
}

for (const a of ACTIONS) $("btn-" + a).addEventListener("click", (ev) => control(a, ev.currentTarget));

// ---- convergence ----

function renderClients(s) {
  const pub = s.publishedVersions || {};
  const short = (url) => ({ Listener: "LDS", RouteConfiguration: "RDS", Cluster: "CDS", ClusterLoadAssignment: "EDS" })[url.split(".").pop()] || url;
  $("published").textContent = "published " + Object.entries(pub).map(([k, v]) => `${short(k)} ${v}`).sort().join(" · ");
  const rows = s.clients.map((c) => el("tr", {
    "data-node-id": c.nodeId, "data-converged": String(c.converged), "data-nack": c.lastNack ? "true" : "false",
  },
  el("td", { class: "node", title: `${c.streams} stream(s) since ${hhmmss(c.connectedSince)}` }, c.nodeId),
  ["LDS", "RDS", "CDS", "EDS"].map((k) => {
    const t = c.types[k];
    return el("td", {
      class: "ver", "data-type": k, "data-current": t ? String(t.current) : "",
      title: t ? `acked ${t.acked || "none"}${t.sent ? ", sent " + t.sent : ""}${t.published ? ", published " + t.published : ""}` : "not subscribed",
    }, t ? t.acked || "—" : "");
  }),
  el("td", { class: "nack" }, c.lastNack ? `${c.lastNack.type} ${c.lastNack.version}${when(c.lastNack.at)}: ${c.lastNack.detail}` : "")));
  $("clients-table").tBodies[0].replaceChildren(...rows);
  $("clients-none").hidden = s.clients.length > 0;
}

// ---- history ----

function renderHistory(s) {
  const blocks = s.services.filter((x) => x.rollout).map((sv) => {
    const st = sv.rollout.status;
    const revs = (st.history || []).map((r, i, all) =>
      el("span", { class: "rev" + (i === all.length - 1 ? " current" : ""), title: r.artifact || r.virtualNode, text: `r${r.revision} · ${r.version}` }));
    const last = el("div", { class: "hist-last" },
      `Last rollout ${st.oldVersion || "?"} → ${st.newVersion || "?"}: `,
      el("b", { text: st.phase }),
      st.startedAt ? ` · started ${hhmmss(st.startedAt)}` : "",
      st.finishedAt ? ` · finished ${hhmmss(st.finishedAt)}` : "",
      st.reason ? el("div", { class: "error", text: st.reason }) : null);
    return el("div", { class: "hist-service", "data-service": sv.name },
      el("h4", { text: sv.name }),
      el("div", { class: "revs" }, revs.length ? revs : el("span", { class: "muted small", text: "no revisions recorded" })),
      last);
  });
  $("history").replaceChildren(...(blocks.length ? blocks : [el("p", { class: "muted", text: "No rollouts yet." })]));
}

window.addEventListener("resize", () => g.state && renderCharts(g.state));
connect();
