/* Strata dashboard: a plain-JavaScript client of the public API (no framework, no build step).
 *
 *   /ui            the job list, polled every 2 s
 *   /ui/jobs/{id}  one job, live over Server-Sent Events (GET /v1/jobs/{id}/watch)
 *
 * Every value from the API goes into the page as text (textContent), never as HTML.
 */
"use strict";

(() => {
  const STAGES = [
    { status: "LandingToODS", layer: "ods", label: "Landing → ODS" },
    { status: "ODSToDWD", layer: "dwd", label: "ODS → DWD" },
    { status: "DWDToDWS", layer: "dws", label: "DWD → DWS" },
    { status: "DWSToDS", layer: "ds", label: "DWS → DS" },
  ];
  const FLOW = ["Pending", ...STAGES.map((s) => s.status), "Completed", "Succeeded"];
  const ALL_STATES = [...FLOW, "Failed", "Cancelled"];
  const STOPPED = new Set(["Succeeded", "Failed", "Cancelled"]);
  const LIST_POLL_MS = 2000;
  const JOB_POLL_MS = 2000;
  const PREVIEW_ROWS = 50;
  const TOKEN_KEY = "strata.token";
  const SVG_NS = "http://www.w3.org/2000/svg";

  const ACTIONS = [
    { name: "cancel", label: "Cancel", done: "Cancelled", kind: "danger",
      allowed: (j) => !STOPPED.has(j.status) },
    { name: "suspend", label: "Suspend", done: "Suspended", kind: "secondary",
      allowed: (j) => !STOPPED.has(j.status) && !j.suspend },
    { name: "resume", label: "Resume", done: "Resumed", kind: "secondary",
      allowed: (j) => !STOPPED.has(j.status) && j.suspend },
    { name: "retry", label: "Retry", done: "Retry started", kind: "primary",
      allowed: (j) => j.status === "Failed" || j.status === "Cancelled" },
  ];

  // --- small helpers ---------------------------------------------------------------------------

  function h(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  }

  function svg(tag, attrs, ...children) {
    return build(document.createElementNS(SVG_NS, tag), attrs, children);
  }

  function build(el, attrs, children) {
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "text") el.textContent = String(value);
      else if (key.startsWith("on") && typeof value === "function") {
        el.addEventListener(key.slice(2), value);
      } else if (key === "dataset") Object.assign(el.dataset, value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
  }

  const $ = (sel, root = document) => root.querySelector(sel);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const enc = encodeURIComponent;
  const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
  const clamp = (v) => Math.max(0, Math.min(100, num(v) ?? 0));
  const intFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
  const decFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });

  function fmtInt(v) {
    return num(v) === null ? "—" : intFmt.format(v);
  }

  function fmtNumber(v) {
    if (num(v) === null) return v === null || v === undefined ? "—" : String(v);
    return Number.isInteger(v) ? intFmt.format(v) : decFmt.format(v);
  }

  const fixed2 = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2,
                                                     maximumFractionDigits: 2 });
  const small = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 3 });

  /** One formatter for a whole column, so decimals line up: integers, else two decimals. */
  function columnFormat(values) {
    const nums = values.filter((v) => num(v) !== null);
    if (!nums.length || nums.length !== values.filter((v) => v !== null).length) return fmtNumber;
    if (nums.every(Number.isInteger)) return fmtInt;
    const tiny = nums.every((v) => Math.abs(v) < 0.01);
    return (v) => (num(v) === null ? "—" : (tiny ? small : fixed2).format(v));
  }

  function fmtSeconds(v) {
    if (num(v) === null) return "—";
    if (v < 10) return `${v.toFixed(2)} s`;
    if (v < 90) return `${v.toFixed(1)} s`;
    return fmtDuration(v * 1000);
  }

  function fmtDuration(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${s % 60} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  function ago(iso) {
    if (!iso) return "—";
    const diff = Date.now() - new Date(iso).getTime();
    if (diff < 5000) return "just now";
    if (diff < 60000) return `${Math.round(diff / 1000)} s ago`;
    if (diff < 3600000) return `${Math.round(diff / 60000)} min ago`;
    if (diff < 86400000) return `${Math.round(diff / 3600000)} h ago`;
    return new Date(iso).toLocaleDateString();
  }

  function timeEl(iso, relative = true) {
    if (!iso) return h("span", { class: "muted", text: "—" });
    const abs = new Date(iso).toLocaleString();
    return h("time", { datetime: iso, title: abs, text: relative ? ago(iso) : abs });
  }

  function jobDuration(job) {
    if (!job.started_at) return "—";
    const end = job.ended_at ? new Date(job.ended_at) : new Date();
    return fmtDuration(end - new Date(job.started_at));
  }

  function statusClass(status) {
    if (status === "Succeeded") return "ok";
    if (status === "Failed") return "bad";
    if (status === "Cancelled") return "warn";
    if (status === "Pending") return "idle";
    return "run";
  }

  function statusBadge(status, suspended) {
    return h("span", { class: "badges" },
      h("span", { class: `badge badge-${statusClass(status)}`, dataset: { status } },
        h("span", { class: "dot", "aria-hidden": "true" }), status),
      suspended && !STOPPED.has(status)
        ? h("span", { class: "badge badge-paused", text: "Suspended" }) : null);
  }

  function toast(message) {
    const el = $("#toast");
    el.textContent = message;
    el.hidden = false;
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => { el.hidden = true; }, 3500);
  }

  // --- the API ---------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, title, detail, problem) {
      super(detail ? `${title}: ${detail}` : title);
      this.status = status;
      this.title = title;
      this.detail = detail;
      this.problem = problem || {};
    }
  }

  const getToken = () => sessionStorage.getItem(TOKEN_KEY);

  function authHeaders() {
    const token = getToken();
    return token ? { Authorization: `Bearer ${token}` } : {};
  }

  async function readProblem(resp) {
    const text = await resp.text().catch(() => "");
    try {
      const body = JSON.parse(text);
      if (body && typeof body === "object") {
        return { title: body.title || resp.statusText || `HTTP ${resp.status}`,
                 detail: body.detail || "", problem: body };
      }
    } catch (_) { /* not JSON */ }
    return { title: resp.statusText || `HTTP ${resp.status}`, detail: text.slice(0, 300),
             problem: {} };
  }

  async function request(path, { method = "GET", accept = "application/json" } = {}) {
    let resp;
    try {
      resp = await fetch(path, { method, cache: "no-store",
                                 headers: { Accept: accept, ...authHeaders() } });
    } catch (err) {
      throw new ApiError(0, "The service did not answer", String(err.message || err));
    }
    if (!resp.ok) {
      const p = await readProblem(resp);
      if (resp.status === 401) auth.show(p.detail);
      throw new ApiError(resp.status, p.title, p.detail, p.problem);
    }
    return resp;
  }

  async function api(path, options) {
    const resp = await request(path, options);
    return resp.status === 204 ? null : resp.json();
  }

  function problemAlert(heading, err, onDismiss) {
    const errors = Array.isArray(err.problem.errors) ? err.problem.errors : [];
    const status = err.status ? `${err.status} ${err.title}` : err.title;
    return h("div", { class: "alert", role: "alert" },
      h("div", { class: "alert-body" },
        h("strong", { text: heading }),
        h("p", { class: "alert-title", text: status }),
        err.detail ? h("p", { class: "alert-detail", text: err.detail }) : null,
        errors.length
          ? h("ul", {}, errors.map((e) => h("li", {
              text: e.field ? `${e.field}: ${e.message}` : String(e.message || JSON.stringify(e)),
            })))
          : null),
      onDismiss
        ? h("button", { type: "button", class: "btn btn-ghost btn-small", onclick: onDismiss,
                        "aria-label": "Dismiss this message", text: "Dismiss" })
        : null);
  }

  // --- authentication --------------------------------------------------------------------------

  const auth = {
    init() {
      $("#auth-form").addEventListener("submit", (event) => {
        event.preventDefault();
        const value = $("#token-input").value.trim();
        if (!value) return;
        sessionStorage.setItem(TOKEN_KEY, value);
        $("#token-input").value = "";
        auth.hide();
        route();
      });
      $("#forget-token").addEventListener("click", () => {
        sessionStorage.removeItem(TOKEN_KEY);
        auth.refresh();
        route();
      });
      auth.refresh();
    },
    refresh() {
      $("#forget-token").hidden = !getToken();
    },
    show(detail) {
      const had = getToken();
      if (had) sessionStorage.removeItem(TOKEN_KEY);
      auth.refresh();
      const panel = $("#auth");
      $("#auth-reason").textContent = had
        ? `The token was refused${detail ? ` (${detail})` : ""}. Enter another one.`
        : `This Strata service asks for an API token${detail ? ` (${detail})` : ""}.`;
      const wasHidden = panel.hidden;
      panel.hidden = false;
      $("#view").hidden = true;
      if (wasHidden) $("#token-input").focus();
    },
    hide() {
      $("#auth").hidden = true;
      $("#view").hidden = false;
      auth.refresh();
    },
  };

  // --- progress --------------------------------------------------------------------------------

  function stageProgress(job) {
    const results = job.results || {};
    const layers = results.layers || {};
    const batch = results.batch || {};
    const at = FLOW.indexOf(job.status);
    return STAGES.map((stage) => {
      const index = FLOW.indexOf(stage.status);
      const base = { ...stage, percent: 0, state: "todo" };
      if (layers[stage.layer] || (at >= 0 && index < at)) {
        return { ...base, percent: 100, state: "done" };
      }
      if (stage.status === job.status) {
        const percent = batch.stage === stage.status ? clamp(batch.percent) : 0;
        return { ...base, percent, state: "active" };
      }
      if (STOPPED.has(job.status) && batch.stage === stage.status) {
        return { ...base, percent: clamp(batch.percent),
                 state: job.status === "Failed" ? "failed" : "stopped" };
      }
      return base;
    });
  }

  function progressText(job, stages) {
    const done = stages.filter((s) => s.state === "done").length;
    const active = stages.find((s) => s.state === "active");
    if (job.status === "Succeeded") return "All 4 stages done";
    if (active) return `Stage ${done + 1} of 4 · ${active.label} · ${Math.round(active.percent)}%`;
    if (job.status === "Pending") return "Waiting to start";
    if (job.status === "Completed") return "All 4 stages done · checking outputs";
    return `${done} of 4 stages done`;
  }

  function progressBar(job, { large = false } = {}) {
    const bar = h("div", { class: large ? "progress progress-large" : "progress",
                           role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" },
      STAGES.map((stage) => h("div", { class: "seg", dataset: { stage: stage.status } },
        h("div", { class: "seg-fill" }))));
    const caption = h("span", { class: "progress-text" });
    const wrap = h("div", { class: "progress-wrap" }, bar, caption);
    updateProgress(wrap, job);
    return wrap;
  }

  function updateProgress(wrap, job) {
    const stages = stageProgress(job);
    const bar = $(".progress", wrap);
    const overall = stages.reduce((sum, s) => sum + s.percent, 0) / 4;
    const text = progressText(job, stages);
    bar.setAttribute("aria-valuenow", String(Math.round(overall)));
    bar.setAttribute("aria-valuetext", text);
    bar.setAttribute("aria-label", `Progress of ${job.name}`);
    stages.forEach((stage, i) => {
      const seg = bar.children[i];
      seg.className = `seg seg-${stage.state}`;
      seg.dataset.percent = String(Math.round(stage.percent));
      seg.title = `${stage.label}: ${stage.state === "todo" ? "not started" : `${Math.round(stage.percent)}%`}`;
      seg.firstChild.style.width = `${stage.percent}%`;
    });
    $(".progress-text", wrap).textContent = text;
  }

  // --- routing ---------------------------------------------------------------------------------

  let page = null;

  function route({ focus = false } = {}) {
    if (page) page.dispose();
    const view = $("#view");
    view.replaceChildren();
    const match = location.pathname.match(/^\/ui\/jobs\/([^/]+)\/?$/);
    page = match ? jobPage(view, decodeURIComponent(match[1])) : listPage(view);
    if (focus) {
      const heading = $("h1", view);
      if (heading) heading.focus();
    }
  }

  function navigate(href) {
    history.pushState(null, "", href);
    route({ focus: true });
    window.scrollTo(0, 0);
  }

  document.addEventListener("click", (event) => {
    const link = event.target.closest && event.target.closest("a[data-nav]");
    if (!link || event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(link.getAttribute("href"));
  });
  window.addEventListener("popstate", () => route({ focus: true }));

  // --- the job list ----------------------------------------------------------------------------

  function listPage(view) {
    document.title = "Jobs · Strata";
    const params = new URLSearchParams(location.search);
    let filter = ALL_STATES.includes(params.get("status")) ? params.get("status") : "";
    let timer = null;
    let disposed = false;
    const rows = new Map();

    const select = h("select", { id: "status-filter", name: "status" },
      h("option", { value: "", text: "All" }),
      ALL_STATES.map((s) => h("option", { value: s, text: s, selected: s === filter })));
    select.addEventListener("change", () => {
      filter = select.value;
      const url = filter ? `/ui?status=${enc(filter)}` : "/ui";
      history.replaceState(null, "", url);
      rows.clear();
      tbody.replaceChildren();
      refresh();
    });

    const meta = h("p", { class: "muted small", id: "list-meta", "aria-live": "polite" },
      "Loading…");
    const errorBox = h("div", { class: "error-slot" });
    const tbody = h("tbody", {});
    const empty = h("div", { class: "empty", hidden: true },
      h("p", { class: "empty-title", text: "No jobs yet" }),
      h("p", { class: "muted" }, "Land files with ", h("code", { text: "PUT /v1/landing/…" }),
        ", then submit a job with ", h("code", { text: "POST /v1/jobs" }),
        " (see examples/orders_job.json). It shows up here within two seconds."));
    const table = h("table", { class: "table jobs-table", id: "jobs-table" },
      h("caption", { class: "sr-only", text: "Jobs, newest first" }),
      h("thead", {}, h("tr", {},
        h("th", { scope: "col", text: "Job" }),
        h("th", { scope: "col", text: "Status" }),
        h("th", { scope: "col", class: "col-progress", text: "Progress" }),
        h("th", { scope: "col", text: "Created" }),
        h("th", { scope: "col", text: "Duration" }))),
      tbody);

    view.append(
      h("div", { class: "page-head" },
        h("div", {}, h("h1", { tabindex: "-1", text: "Jobs" }), meta),
        h("div", { class: "filters" }, h("label", { for: "status-filter", text: "Status" }),
          select)),
      errorBox,
      h("section", { class: "card card-flush", "aria-labelledby": "jobs-caption" },
        h("h2", { class: "sr-only", id: "jobs-caption", text: "Job list" }),
        h("div", { class: "table-scroll" }, table), empty));

    function rowFor(job) {
      let row = rows.get(job.job_id);
      if (!row) {
        const href = `/ui/jobs/${enc(job.job_id)}`;
        row = h("tr", { dataset: { jobId: job.job_id } },
          h("td", { class: "cell-name", "data-label": "Job" },
            h("a", { href, "data-nav": true, class: "job-link" }),
            h("span", { class: "muted small mono job-id", text: job.job_id.slice(0, 8) })),
          h("td", { class: "cell-status", "data-label": "Status" }),
          h("td", { class: "cell-progress", "data-label": "Progress" }, progressBar(job)),
          h("td", { class: "cell-created", "data-label": "Created" }),
          h("td", { class: "cell-duration", "data-label": "Duration" }));
        rows.set(job.job_id, row);
      }
      $(".job-link", row).textContent = job.name;
      $(".cell-status", row).replaceChildren(statusBadge(job.status, job.suspend));
      row.dataset.status = job.status;
      updateProgress($(".progress-wrap", row), job);
      $(".cell-created", row).replaceChildren(timeEl(job.created_at));
      $(".cell-duration", row).textContent = jobDuration(job);
      return row;
    }

    function render(data) {
      const seen = new Set();
      data.jobs.forEach((job, i) => {
        seen.add(job.job_id);
        const row = rowFor(job);
        if (tbody.children[i] !== row) tbody.insertBefore(row, tbody.children[i] || null);
      });
      for (const [id, row] of rows) {
        if (!seen.has(id)) { row.remove(); rows.delete(id); }
      }
      const shown = data.jobs.length;
      empty.hidden = shown > 0;
      table.hidden = shown === 0;
      const open = data.jobs.filter((j) => !STOPPED.has(j.status));
      const held = open.filter((j) => j.suspend).length;
      const running = open.length - held;
      meta.textContent = `${intFmt.format(data.total)} job${data.total === 1 ? "" : "s"}` +
        (shown < data.total ? ` (newest ${shown} shown)` : "") +
        (running ? ` · ${running} running` : "") + (held ? ` · ${held} suspended` : "") +
        " · refreshed every 2 s";
    }

    async function refresh() {
      clearTimeout(timer);
      if (disposed) return;
      let again = true;
      try {
        const query = filter ? `&status=${enc(filter)}` : "";
        render(await api(`/v1/jobs?limit=100${query}`));
        errorBox.replaceChildren();
      } catch (err) {
        if (err.status === 401) again = false;
        else errorBox.replaceChildren(problemAlert("Could not load the jobs", err));
      }
      if (!disposed && again) timer = setTimeout(refresh, LIST_POLL_MS);
    }

    refresh();
    return { dispose() { disposed = true; clearTimeout(timer); } };
  }

  // --- the state diagram -----------------------------------------------------------------------

  function parseMermaid(text) {
    const edges = [];
    let active = null;
    let start = null;
    for (const raw of String(text || "").split("\n")) {
      const line = raw.trim();
      let m;
      if ((m = line.match(/^\[\*\]\s*-->\s*(\w+)/))) start = m[1];
      else if (/^\w+\s*-->\s*\[\*\]/.test(line)) continue;
      else if ((m = line.match(/^(\w+)\s*-->\s*(\w+)\s*(?::\s*(.*))?$/))) {
        edges.push({ from: m[1], to: m[2], label: (m[3] || "").replace(/\s*\[.*\]$/, "") });
      } else if ((m = line.match(/^(\w+):::active$/))) active = m[1];
    }
    return { edges, active, start };
  }

  function layoutMachine(fsm) {
    const { edges, active, start } = parseMermaid(fsm.diagram);
    const states = Array.isArray(fsm.states) && fsm.states.length ? fsm.states : ALL_STATES;
    if (!edges.length || !start) {
      return { chain: FLOW, branch: ["Failed", "Cancelled"], edges: [], active };
    }
    const incoming = new Map();
    for (const e of edges) incoming.set(e.to, (incoming.get(e.to) || 0) + 1);
    const chain = [start];
    for (;;) {
      const here = chain[chain.length - 1];
      const next = edges.filter((e) => e.from === here && e.to !== here && !chain.includes(e.to))
        .sort((a, b) => incoming.get(a.to) - incoming.get(b.to))[0];
      if (!next) break;
      chain.push(next.to);
    }
    const branch = states.filter((s) => !chain.includes(s));
    return { chain, branch, edges, active };
  }

  function doneStates(job) {
    const done = new Set();
    if (!job) return done;
    if (job.started_at) done.add("Pending");
    for (const s of stageProgress(job)) if (s.state === "done") done.add(s.status);
    if (job.status === "Succeeded") done.add("Completed");
    return done;
  }

  function renderDiagram(fsm, job, vertical = false) {
    const { chain, branch, edges, active } = layoutMachine(fsm);
    const current = active || (job && job.status);
    const done = doneStates(job);
    const W = vertical ? 136 : 116, H = vertical ? 38 : 44;
    const M = 12;
    // where each chain box sits, and the geometry of the fail/cancel "bus"
    const G = vertical
      ? (() => {
          const gap = 16;
          const at = (i) => ({ x: M, y: M + i * (H + gap) });
          const busX = M + W + 28;
          return { at, busX, branchX: busX + 56,
                   width: busX + 56 + W + M, chainEnd: M + chain.length * (H + gap) - gap };
        })()
      : (() => {
          const gap = 26;
          const at = (i) => ({ x: M + i * (W + gap), y: 18 });
          const busY = 18 + H + 34;
          return { at, busY, branchY: busY + 52,
                   width: M * 2 + chain.length * W + (chain.length - 1) * gap };
        })();
    const mid = (i) => ({ x: G.at(i).x + W / 2, y: G.at(i).y + H / 2 });

    const box = (name, x, y, extra) => {
      const classes = ["st", extra];
      if (name === current) classes.push("st-current", `st-current-${statusClass(name)}`);
      else if (done.has(name)) classes.push("st-done");
      if (name === current && job && job.suspend && !STOPPED.has(name)) classes.push("st-paused");
      return svg("g", { class: classes.filter(Boolean).join(" "), dataset: { state: name } },
        svg("title", {}, name === current ? `${name} (current)` : name),
        svg("rect", { x, y, width: W, height: H, rx: 10 }),
        svg("text", { x: x + W / 2, y: y + H / 2 + 1, "text-anchor": "middle",
                      "dominant-baseline": "middle" }, name));
    };
    const line = (x1, y1, x2, y2, cls, arrow, title) => svg("line", {
      x1, y1, x2, y2, class: cls, "marker-end": arrow ? "url(#fsm-arrow)" : null },
      title ? svg("title", {}, title) : null);
    const label = (x, y, text, anchor = "start") => svg("text", {
      x, y, class: "edge-label", "dominant-baseline": "middle", "text-anchor": anchor }, text);

    const parts = [
      svg("defs", {},
        svg("marker", { id: "fsm-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
                        markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
          svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }))),
    ];
    // the main flow
    for (let i = 1; i < chain.length; i++) {
      const how = (edges.find((e) => e.from === chain[i - 1] && e.to === chain[i]) || {}).label;
      const title = `${chain[i - 1]} → ${chain[i]}${how ? ` (${how})` : ""}`;
      const a = G.at(i - 1), b = G.at(i);
      parts.push(vertical
        ? line(a.x + W / 2, a.y + H, b.x + W / 2, b.y - 1, "edge", true, title)
        : line(a.x + W, a.y + H / 2, b.x - 1, b.y + H / 2, "edge", true, title));
    }
    // fail / cancel from every state that can, through one bus line
    const sources = chain.map((name, i) => ({ name, i }))
      .filter(({ name }) => edges.some((e) => e.from === name && branch.includes(e.to)));
    let bottom = vertical ? G.chainEnd : 18 + H;
    if (branch.length && sources.length) {
      const first = mid(sources[0].i), last = mid(sources[sources.length - 1].i);
      for (const { i } of sources) {
        const c = mid(i);
        parts.push(vertical ? line(c.x + W / 2, c.y, G.busX, c.y, "edge edge-soft")
                            : line(c.x, c.y + H / 2, c.x, G.busY, "edge edge-soft"));
      }
      parts.push(vertical ? line(G.busX, first.y, G.busX, last.y, "edge edge-soft")
                          : line(first.x, G.busY, last.x, G.busY, "edge edge-soft"));
      const from = vertical ? first.y : first.x, span = (vertical ? last.y : last.x) - from;
      let lastBox = null;
      branch.forEach((name, k) => {
        const along = from + (span * (k + 1)) / (branch.length + 1);
        const how = [...new Set(edges.filter((e) => e.to === name && chain.includes(e.from))
          .map((e) => e.label))].join(", ");
        if (vertical) {
          parts.push(line(G.busX, along, G.branchX - 1, along, "edge edge-soft", true));
          if (how) parts.push(label(G.busX + 8, along - 9, how));
          parts.push(box(name, G.branchX, along - H / 2, "st-branch"));
          lastBox = { x: G.branchX, y: along - H / 2 };
        } else {
          parts.push(line(along, G.busY, along, G.branchY - 1, "edge edge-soft", true));
          if (how) parts.push(label(along + 8, (G.busY + G.branchY) / 2 + 1, how));
          parts.push(box(name, along - W / 2, G.branchY, "st-branch"));
          lastBox = { x: along - W / 2, y: G.branchY };
        }
      });
      bottom = Math.max(bottom, lastBox.y + H);
      if (edges.some((e) => branch.includes(e.from) && chain.includes(e.to))) {
        const text = "Retry: back to the stage that did not finish";
        if (vertical) {
          const x = G.busX + 8, y = lastBox.y + H + 24;
          parts.push(svg("path", { d: `M ${x} ${y} h 28`, class: "edge edge-retry",
                                   "marker-end": "url(#fsm-arrow)" }));
          parts.push(label(x + 36, y, "Retry: back to the"));
          parts.push(label(x, y + 17, "stage that did not finish"));
          bottom = Math.max(bottom, y + 24);
        } else {
          const x = lastBox.x + W + 24, y = lastBox.y + H / 2;
          parts.push(svg("path", { d: `M ${x} ${y} h 34`, class: "edge edge-retry",
                                   "marker-end": "url(#fsm-arrow)" }));
          parts.push(label(x + 42, y + 1, text));
        }
      }
    }
    chain.forEach((name, i) => parts.push(box(name, G.at(i).x, G.at(i).y, "st-flow")));

    return svg("svg", { viewBox: `0 0 ${G.width} ${bottom + M + 6}`,
                        class: vertical ? "fsm fsm-vertical" : "fsm", role: "img",
                        "aria-label": `Job state machine; current state ${current || "unknown"}`,
                        dataset: { current: current || "" }, preserveAspectRatio: "xMinYMin meet" },
      parts);
  }

  // --- one job ---------------------------------------------------------------------------------

  function jobPage(view, jobId) {
    document.title = "Job · Strata";
    let job = null;
    let disposed = false;
    let stream = null;
    let pollTimer = null;
    let eventsKey = "";
    let fsmFor = "";
    let outputLoaded = false;
    let lastFsm = null;
    let drawnVertical = false;
    const jobUrl = `/v1/jobs/${enc(jobId)}`;

    const el = {
      title: h("h1", { tabindex: "-1", class: "job-title", text: "Loading…" }),
      badges: h("span", { class: "job-badges" }),
      live: h("span", { class: "live", dataset: { state: "connecting" } },
        h("span", { class: "dot", "aria-hidden": "true" }), h("span", { class: "live-text" })),
      meta: h("dl", { class: "meta" }),
      description: h("p", { class: "description", hidden: true }),
      actions: h("div", { class: "actions", role: "toolbar", "aria-label": "Job actions" }),
      alert: h("div", { class: "error-slot" }),
      announcer: h("p", { class: "sr-only", "aria-live": "polite", id: "job-announcer" }),
      progress: h("div", { class: "progress-slot" }),
      batch: h("p", { class: "muted small batch-line" }),
      diagram: h("div", { class: "diagram-scroll", id: "fsm" }),
      diagramCaption: h("figcaption", { class: "muted small" }),
      conditions: h("div", { class: "table-scroll" }),
      layers: h("div", { class: "table-scroll" }),
      outputSection: h("section", { class: "card", id: "output", hidden: true,
                                    "aria-labelledby": "output-title" }),
      events: h("ol", { class: "timeline", id: "events", "aria-label": "Events, oldest first" }),
      params: h("pre", { class: "params mono" }),
    };

    const buttons = new Map();
    for (const action of ACTIONS) {
      const button = h("button", { type: "button", class: `btn btn-${action.kind}`,
                                   dataset: { action: action.name }, disabled: true,
                                   onclick: () => act(action) }, action.label);
      buttons.set(action.name, button);
      el.actions.append(button);
    }

    view.append(
      h("nav", { class: "crumbs", "aria-label": "Breadcrumb" },
        h("a", { href: "/ui", "data-nav": true, text: "← All jobs" })),
      h("div", { class: "page-head job-head" },
        h("div", { class: "job-head-main" },
          h("div", { class: "title-row" }, el.title, el.badges), el.meta, el.description),
        h("div", { class: "job-head-side" }, el.actions, el.live)),
      el.alert, el.announcer,
      h("section", { class: "card", "aria-labelledby": "progress-title" },
        h("h2", { id: "progress-title", text: "Progress" }), el.progress, el.batch),
      h("section", { class: "card", "aria-labelledby": "fsm-title" },
        h("h2", { id: "fsm-title", text: "State" }),
        h("figure", { class: "diagram" }, el.diagram, el.diagramCaption)),
      h("section", { class: "card", "aria-labelledby": "layers-title" },
        h("h2", { id: "layers-title", text: "Layer results" }), el.layers),
      el.outputSection,
      h("div", { class: "grid-2" },
        h("section", { class: "card", "aria-labelledby": "events-title" },
          h("h2", { id: "events-title", text: "Events" }), el.events),
        h("section", { class: "card", "aria-labelledby": "conditions-title" },
          h("h2", { id: "conditions-title", text: "Conditions" }), el.conditions)),
      h("section", { class: "card" },
        h("details", {}, h("summary", { text: "Parameters (as submitted, defaults filled)" }),
          el.params)));

    // -- rendering

    function renderHead() {
      el.title.textContent = job.name;
      document.title = `${job.name} · ${job.status} · Strata`;
      el.badges.replaceChildren(statusBadge(job.status, job.suspend));
      el.badges.dataset.status = job.status;
      const item = (label, value) => h("div", {}, h("dt", { text: label }), h("dd", {}, value));
      el.meta.replaceChildren();
      append(el.meta, [
        item("Job id", h("code", { class: "mono", text: job.job_id })),
        item("Owner", job.owner),
        item("Created", timeEl(job.created_at)),
        item("Started", timeEl(job.started_at)),
        job.ended_at ? item("Ended", timeEl(job.ended_at)) : null,
        job.started_at ? item(job.ended_at ? "Took" : "Running for", jobDuration(job)) : null,
        item("Attempt", String(job.attempt ?? 1))]);
      el.description.hidden = !job.description;
      el.description.textContent = job.description || "";
      for (const action of ACTIONS) {
        const button = buttons.get(action.name);
        if (button.getAttribute("aria-busy") === "true") continue;
        button.disabled = !action.allowed(job);
      }
    }

    function renderProgress() {
      const existing = $(".progress-wrap", el.progress);
      if (existing) updateProgress(existing, job);
      else el.progress.append(progressBar(job, { large: true }));
      const labels = $(".stage-labels", el.progress) || el.progress.appendChild(
        h("ol", { class: "stage-labels", "aria-hidden": "true" },
          STAGES.map((s) => h("li", { dataset: { stage: s.status } },
            h("span", { class: "stage-name", text: s.label }),
            h("span", { class: "stage-pct" })))));
      stageProgress(job).forEach((s, i) => {
        const li = labels.children[i];
        li.className = `stage-${s.state}`;
        $(".stage-pct", li).textContent = {
          todo: "Not started", done: "Done", active: `${Math.round(s.percent)}%`,
          failed: `Failed at ${Math.round(s.percent)}%`, stopped: `Stopped at ${Math.round(s.percent)}%`,
        }[s.state];
      });
      const b = (job.results || {}).batch;
      el.batch.textContent = b && b.stage && !["Succeeded"].includes(job.status)
        ? `Current task: ${b.stage}, attempt ${b.attempt ?? 1}, ${b.status || "running"}` +
          (num(b.total) ? ` · ${fmtInt(b.processed)} of ${fmtInt(b.total)} rows` : "")
        : "";
    }

    function renderConditions() {
      const conditions = job.conditions || [];
      if (!conditions.length) {
        el.conditions.replaceChildren(h("p", { class: "muted", text: "No conditions yet." }));
        return;
      }
      el.conditions.replaceChildren(h("table", { class: "table compact", id: "conditions-table" },
        h("caption", { class: "sr-only", text: "Conditions" }),
        h("thead", {}, h("tr", {}, ["Type", "Status", "Reason", "Message", "Changed"].map(
          (t) => h("th", { scope: "col", text: t })))),
        h("tbody", {}, conditions.map((c) => h("tr", { dataset: { type: c.type } },
          h("th", { scope: "row", text: c.type }),
          h("td", {}, h("span", { class: `pill pill-${String(c.status).toLowerCase()}`,
                                  text: c.status })),
          h("td", { text: c.reason }),
          h("td", { class: "wrap", text: c.message || "" }),
          h("td", {}, timeEl(c.last_transition_time)))))));
    }

    function renderLayers() {
      const layers = ((job.results || {}).layers) || {};
      const progress = stageProgress(job);
      el.layers.replaceChildren(h("table", { class: "table", id: "layers-table" },
        h("caption", { class: "sr-only", text: "Per-layer results" }),
        h("thead", {}, h("tr", {},
          h("th", { scope: "col", text: "Layer" }),
          h("th", { scope: "col", class: "col-stage", text: "Stage" }),
          ["Rows", "Rejects", "Deduped", "Seconds"].map(
            (t) => h("th", { scope: "col", class: "num", text: t })))),
        h("tbody", {}, STAGES.map((stage, i) => {
          const r = layers[stage.layer];
          const state = progress[i].state;
          const note = r ? null : state === "active" ? `running · ${Math.round(progress[i].percent)}%`
            : state === "failed" ? "failed" : "not written";
          return h("tr", { dataset: { layer: stage.layer }, class: r ? "" : "row-pending" },
            h("th", { scope: "row" }, h("span", { class: "layer-tag", text: stage.layer.toUpperCase() })),
            h("td", { class: "col-stage" }, stage.label, note ? h("span", { class: "muted small note", text: ` ${note}` }) : null),
            h("td", { class: "num", dataset: { field: "rows" }, text: r ? fmtInt(r.rows) : "—" }),
            h("td", { class: `num${r && r.rejects ? " warn-text" : ""}`, dataset: { field: "rejects" },
                      text: r ? fmtInt(r.rejects) : "—" }),
            h("td", { class: "num", dataset: { field: "deduped" }, text: r ? fmtInt(r.deduped) : "—" }),
            h("td", { class: "num", dataset: { field: "seconds" }, text: r ? fmtSeconds(r.seconds) : "—" }));
        }))));
    }

    function narrow() {
      return (el.diagram.clientWidth || window.innerWidth) < 600;
    }

    function drawDiagram() {
      if (!lastFsm || !job) return;
      drawnVertical = narrow();
      el.diagram.replaceChildren(renderDiagram(lastFsm, job, drawnVertical));
    }

    const resizes = new ResizeObserver(() => {
      if (lastFsm && narrow() !== drawnVertical) drawDiagram();
    });
    resizes.observe(el.diagram);

    async function renderDiagramFor() {
      const key = `${job.status}|${job.suspend}|${[...doneStates(job)].join(",")}`;
      if (key === fsmFor) return;
      fsmFor = key;
      const status = job.status;
      let fsm;
      try {
        fsm = await api(`/v1/fsm?current=${enc(status)}`);
      } catch (err) {
        fsm = { diagram: "", states: ALL_STATES };
      }
      if (disposed || fsmFor !== key) return;
      lastFsm = fsm;
      drawDiagram();
      el.diagramCaption.textContent = `Current state: ${status}` +
        (job.suspend && !STOPPED.has(status) ? " (suspended: no new stage starts)" : "");
    }

    async function loadEvents() {
      try {
        const data = await api(`${jobUrl}/events`);
        if (disposed) return;
        const events = data.events || [];
        el.events.replaceChildren(...events.map((e) => h("li", {
          class: `event event-${statusClass(e.to_status)}`, dataset: { event: e.event } },
          h("span", { class: "event-dot", "aria-hidden": "true" }),
          h("div", { class: "event-body" },
            h("div", { class: "event-line" },
              h("strong", { class: "event-name", text: e.event }),
              h("span", { class: "event-move" },
                e.from_status && e.from_status !== e.to_status
                  ? `${e.from_status} → ${e.to_status}` : e.to_status),
              e.attempt > 1 ? h("span", { class: "pill", text: `attempt ${e.attempt}` }) : null),
            e.message ? h("p", { class: "event-message", text: e.message }) : null,
            timeEl(e.at, false)))));
        if (!events.length) el.events.append(h("li", { class: "muted", text: "No events yet." }));
      } catch (err) {
        if (err.status !== 401) {
          el.events.replaceChildren(h("li", { class: "muted", text: `Could not load events: ${err.message}` }));
        }
      }
    }

    async function loadOutput() {
      outputLoaded = true;
      const section = el.outputSection;
      const total = ((job.results || {}).output || {}).rows ??
        (((job.results || {}).layers || {}).ds || {}).rows;
      const download = h("button", { type: "button", class: "btn btn-secondary btn-small",
                                     onclick: downloadCsv, text: "Download CSV" });
      section.hidden = false;
      section.replaceChildren(
        h("div", { class: "section-head" },
          h("h2", { id: "output-title", text: "DS output preview" }), download),
        h("p", { class: "muted small", text: "Loading the first rows…" }));
      try {
        const rows = await api(`${jobUrl}/output?format=json&limit=${PREVIEW_ROWS}`);
        if (disposed) return;
        const columns = rows.length ? Object.keys(rows[0]) : [];
        const numeric = new Set(columns.filter(
          (c) => rows.every((r) => r[c] === null || typeof r[c] === "number")));
        const format = Object.fromEntries(columns.map(
          (c) => [c, numeric.has(c) ? columnFormat(rows.map((r) => r[c])) : fmtNumber]));
        const caption = `First ${intFmt.format(rows.length)} of ${fmtInt(total ?? rows.length)} rows`;
        section.replaceChildren(
          h("div", { class: "section-head" },
            h("h2", { id: "output-title", text: "DS output preview" }), download),
          h("p", { class: "muted small", id: "output-caption", text: caption }),
          rows.length
            ? h("div", { class: "table-scroll output-scroll", tabindex: "0", role: "region",
                         "aria-label": "DS output rows" },
                h("table", { class: "table compact", id: "output-table" },
                  h("caption", { class: "sr-only", text: caption }),
                  h("thead", {}, h("tr", {}, columns.map((c) => h("th", {
                    scope: "col", class: numeric.has(c) ? "num" : null, text: c })))),
                  h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => h("td", {
                    class: numeric.has(c) ? "num" : null, text: format[c](r[c]) })))))))
            : h("p", { class: "muted", text: "The DS layer has no rows." }));
      } catch (err) {
        if (err.status !== 401) {
          section.replaceChildren(h("h2", { id: "output-title", text: "DS output preview" }),
            problemAlert("Could not load the output", err));
        }
        outputLoaded = false;
      }
    }

    async function downloadCsv() {
      try {
        const resp = await request(`${jobUrl}/output?format=csv&limit=1000000`, { accept: "text/csv" });
        const url = URL.createObjectURL(await resp.blob());
        const a = h("a", { href: url, download: `${job.name}-${job.job_id.slice(0, 8)}-ds.csv` });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
      } catch (err) {
        if (err.status !== 401) showAlert("Could not download the output", err);
      }
    }

    function applyJob(next) {
      if (disposed || !next) return;
      const before = job;
      job = next;
      renderHead();
      renderProgress();
      renderConditions();
      renderLayers();
      renderDiagramFor();
      el.params.textContent = JSON.stringify(job.params, null, 2);
      const key = [job.status, job.suspend, job.attempt, (job.conditions || []).length,
                   Object.keys((job.results || {}).layers || {}).join(",")].join("|");
      if (key !== eventsKey) {
        eventsKey = key;
        loadEvents();
      }
      if (before && before.status !== job.status) el.announcer.textContent = `Status: ${job.status}`;
      if (job.status === "Succeeded" && !outputLoaded) loadOutput();
      if (job.status !== "Succeeded") {
        el.outputSection.hidden = true;
        outputLoaded = false;
      }
      if (STOPPED.has(job.status)) {
        stopLive();
        setLive("ended", `Finished · ${job.status}`);
      }
    }

    function showAlert(heading, err) {
      el.alert.replaceChildren(problemAlert(heading, err, () => el.alert.replaceChildren()));
    }

    async function act(action) {
      const button = buttons.get(action.name);
      el.alert.replaceChildren();
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      try {
        const updated = await api(`${jobUrl}/${action.name}`, { method: "POST" });
        button.removeAttribute("aria-busy");
        applyJob(updated);
        toast(`${action.done}: ${updated.name}`);
        if (!STOPPED.has(updated.status)) startLive();
      } catch (err) {
        button.removeAttribute("aria-busy");
        if (err.status !== 401) showAlert(`Could not ${action.name} the job`, err);
        if (job) renderHead();
      }
    }

    // -- live updates: SSE (EventSource; a streamed fetch when a token must be sent), else polling

    function setLive(state, text) {
      el.live.dataset.state = state;
      $(".live-text", el.live).textContent = text || {
        connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…",
        polling: "Refreshing every 2 s", ended: "Finished",
      }[state];
    }

    function stopLive() {
      if (stream) { stream.close(); stream = null; }
      clearTimeout(pollTimer);
      pollTimer = null;
    }

    function startLive() {
      if (disposed || stream || pollTimer) return;
      setLive("connecting");
      stream = getToken() ? fetchStream() : eventSourceStream();
    }

    function onJobEvent(data) {
      setLive("live");
      try { applyJob(JSON.parse(data)); } catch (_) { /* a malformed event: wait for the next */ }
    }

    function onDeleted() {
      stopLive();
      setLive("ended", "Deleted");
      el.alert.replaceChildren(h("div", { class: "alert", role: "alert" },
        h("strong", { text: "This job was deleted." })));
      for (const button of buttons.values()) button.disabled = true;
    }

    function eventSourceStream() {
      const source = new EventSource(`${jobUrl}/watch`);
      source.addEventListener("job", (e) => onJobEvent(e.data));
      source.addEventListener("deleted", onDeleted);
      source.onopen = () => setLive("live");
      source.onerror = () => {
        if (disposed) return;
        if (source.readyState === EventSource.CLOSED) {
          source.close();
          if (stream && stream.source === source) stream = null;
          if (job && STOPPED.has(job.status)) return;
          startPolling();
        } else {
          setLive("reconnecting");
        }
      };
      return { source, close: () => source.close() };
    }

    function fetchStream() {
      const controller = new AbortController();
      (async () => {
        let failures = 0;
        while (!controller.signal.aborted && !disposed) {
          try {
            const resp = await fetch(`${jobUrl}/watch`, { cache: "no-store", signal: controller.signal,
              headers: { Accept: "text/event-stream", ...authHeaders() } });
            if (resp.status === 401) {
              const p = await readProblem(resp);
              auth.show(p.detail);
              return;
            }
            if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
            failures = 0;
            setLive("live");
            const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
            let buffer = "";
            for (;;) {
              const { value, done } = await reader.read();
              if (done) break;
              buffer = (buffer + value).replace(/\r\n?/g, "\n");
              let cut;
              while ((cut = buffer.indexOf("\n\n")) >= 0) {
                const block = buffer.slice(0, cut);
                buffer = buffer.slice(cut + 2);
                let name = "message";
                const data = [];
                for (const line of block.split("\n")) {
                  if (line.startsWith(":")) continue;
                  const colon = line.indexOf(":");
                  const field = colon < 0 ? line : line.slice(0, colon);
                  const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
                  if (field === "event") name = val;
                  else if (field === "data") data.push(val);
                }
                if (name === "job") onJobEvent(data.join("\n"));
                else if (name === "deleted") { onDeleted(); return; }
              }
            }
          } catch (err) {
            if (controller.signal.aborted || disposed) return;
            failures += 1;
          }
          if (job && STOPPED.has(job.status)) return;
          if (failures >= 5) { stream = null; startPolling(); return; }
          setLive("reconnecting");
          await sleep(1000 * Math.min(failures + 1, 5));
        }
      })();
      return { close: () => controller.abort() };
    }

    function startPolling() {
      setLive("polling");
      const tick = async () => {
        pollTimer = null;
        if (disposed) return;
        try { applyJob(await api(jobUrl)); } catch (err) { if (err.status === 401) return; }
        if (!disposed && job && !STOPPED.has(job.status) && !stream) {
          pollTimer = setTimeout(tick, JOB_POLL_MS);
        }
      };
      pollTimer = setTimeout(tick, JOB_POLL_MS);
    }

    // -- start

    (async () => {
      try {
        applyJob(await api(jobUrl));
        if (!STOPPED.has(job.status)) startLive();
      } catch (err) {
        if (disposed || err.status === 401) return;
        el.title.textContent = err.status === 404 ? "Job not found" : "Could not load the job";
        setLive("ended", "Not available");
        el.alert.replaceChildren(problemAlert(
          err.status === 404 ? `No job ${jobId} here.` : "The job could not be loaded.", err));
      }
    })();

    return { dispose() { disposed = true; stopLive(); resizes.disconnect(); } };
  }

  // --- boot ------------------------------------------------------------------------------------

  auth.init();
  route();
})();
