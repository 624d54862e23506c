/* /ui/pipelines: every pipeline with its schedule and recent runs; /ui/pipelines/{name}: one
 * pipeline's runs, its tables (pipeline-tables.js) and its versions. Runs are ordinary jobs (GET /v1/jobs?pipeline=NAME). */

import { api } from "./api.js";
import { h, problemAlert } from "./dom.js";
import { timeEl } from "./format.js";
import { jobDuration, statusBadge, statusClass } from "./jobs.js";
import { pipelineTables } from "./pipeline-tables.js";

const POLL_MS = 5000;
const RECENT_RUNS = 10;
const enc = encodeURIComponent;
const TICK_CLASS = { ran: "ok", missed: "bad" };

/** The schedule as a person says it: the cron line and its timezone, or "every N s". */
export function scheduleWords(schedule) {
  if (!schedule) return "no schedule (runs on demand)";
  if (schedule.cron) return `cron ${schedule.cron} (${schedule.timezone || "UTC"})`;
  if (schedule.interval_seconds) return `every ${schedule.interval_seconds} s`;
  return "no schedule";
}

/** The recent runs as coloured marks, oldest first, each a link to its job. */
export function runMarks(jobs) {
  if (!jobs.length) return h("span", { class: "muted small", text: "no runs yet" });
  return h("span", { class: "run-marks" }, [...jobs].reverse().map((job) => h("a", {
    href: `/ui/jobs/${enc(job.job_id)}`, "data-nav": true,
    class: `run-mark mark-${statusClass(job.status)}`, dataset: { jobId: job.job_id, status: job.status },
    title: `${job.status} · ${new Date(job.created_at).toLocaleString()}`,
    "aria-label": `run ${job.job_id.slice(0, 8)}: ${job.status}` })));
}

function tickMarks(ticks) {
  if (!ticks.length) return null;
  return h("span", { class: "run-marks tick-marks", "aria-label": "Latest ticks" },
    ticks.map((t) => h("span", {
      class: `run-mark tick mark-${TICK_CLASS[t.outcome] || "warn"}`, dataset: { outcome: t.outcome },
      title: `${t.outcome} · ${t.trigger} · ${new Date(t.scheduled_for).toLocaleString()}` })));
}

function suspendedBadge(p) {
  return p.suspend ? h("span", { class: "badge badge-paused", text: "Suspended" }) : null;
}

function polled(view, load) {
  let timer = null;
  let disposed = false;
  const errorBox = h("div", { class: "error-slot" });
  view.append(errorBox);
  async function refresh() {
    clearTimeout(timer);
    if (disposed) return;
    let again = true;
    try {
      await load(() => disposed);
      errorBox.replaceChildren();
    } catch (err) {
      if (err.status === 401) again = false;
      else errorBox.replaceChildren(problemAlert("Could not load the pipelines", err));
    }
    if (!disposed && again) timer = setTimeout(refresh, POLL_MS);
  }
  refresh();
  return { dispose() { disposed = true; clearTimeout(timer); } };
}

export function pipelinesPage(view) {
  document.title = "Pipelines · Strata";
  const meta = h("p", { class: "muted small", id: "pipelines-meta", text: "Loading…" });
  const tbody = h("tbody", {});
  const table = h("table", { class: "table", id: "pipelines-table" },
    h("caption", { class: "sr-only", text: "Pipelines" }),
    h("thead", {}, h("tr", {}, ["Pipeline", "Schedule", "Next run", "Recent runs"].map(
      (t) => h("th", { scope: "col", text: t })))),
    tbody);
  const empty = h("div", { class: "empty", hidden: true },
    h("p", { class: "empty-title", text: "No pipelines yet" }),
    h("p", { class: "muted" }, "Apply one with ", h("code", { text: "PUT /v1/pipelines/{name}" }),
      " (see examples/orders_pipeline.yaml)."));
  view.append(h("div", { class: "page-head" },
    h("div", {}, h("h1", { tabindex: "-1", text: "Pipelines" }), meta)));
  const page = polled(view, async (disposed) => {
    const data = await api("/v1/pipelines?limit=100");
    const runs = await Promise.all(data.pipelines.map(
      (p) => api(`/v1/jobs?pipeline=${enc(p.name)}&limit=${RECENT_RUNS}`)));
    if (disposed()) return;
    tbody.replaceChildren(...data.pipelines.map((p, i) => h("tr", { dataset: { pipeline: p.name } },
      h("td", { class: "cell-name", "data-label": "Pipeline" },
        h("a", { href: `/ui/pipelines/${enc(p.name)}`, "data-nav": true, text: p.name }),
        h("span", { class: "muted small", text: ` v${p.version} ` }), suspendedBadge(p)),
      h("td", { class: "cell-schedule", "data-label": "Schedule", text: scheduleWords(p.schedule) }),
      h("td", { class: "cell-next", "data-label": "Next run" },
        p.schedule && p.schedule.next_fire_at && !p.suspend
          ? timeEl(p.schedule.next_fire_at, false) : h("span", { class: "muted", text: "—" })),
      h("td", { class: "cell-runs", "data-label": "Recent runs" },
        runMarks(runs[i].jobs), tickMarks(p.last_ticks || [])))));
    empty.hidden = data.pipelines.length > 0;
    table.hidden = data.pipelines.length === 0;
    meta.textContent = `${data.total} pipeline${data.total === 1 ? "" : "s"} · refreshed every 5 s`;
  });
  view.append(h("section", { class: "card card-flush" },
    h("div", { class: "table-scroll" }, table), empty));
  return page;
}

export function pipelinePage(view, name) {
  document.title = `${name} · Pipelines · Strata`;
  const url = `/v1/pipelines/${enc(name)}`;
  const title = h("h1", { tabindex: "-1", text: name });
  const meta = h("dl", { class: "meta" });
  const runs = h("div", { class: "table-scroll" });
  const versions = h("div", { class: "table-scroll" });
  let gone = () => false;
  const tables = pipelineTables(name, { disposed: () => gone() });
  view.append(
    h("nav", { class: "crumbs", "aria-label": "Breadcrumb" },
      h("a", { href: "/ui/pipelines", "data-nav": true, text: "← All pipelines" })),
    h("div", { class: "page-head" }, h("div", {}, title, meta)));
  const page = polled(view, async (disposed) => {
    const [p, jobs, vs] = await Promise.all([api(url),
      api(`/v1/jobs?pipeline=${enc(name)}&limit=50`), api(`${url}/versions`)]);
    if (disposed()) return;
    gone = disposed;
    const item = (label, value) => h("div", {}, h("dt", { text: label }), h("dd", {}, value));
    meta.replaceChildren(
      item("Version", String(p.version)),
      item("Schedule", scheduleWords(p.schedule)),
      item("Next run", p.schedule && p.schedule.next_fire_at ? timeEl(p.schedule.next_fire_at, false) : "—"),
      item("State", p.suspend ? suspendedBadge(p) : "active"),
      item("Recent runs", runMarks(jobs.jobs.slice(0, RECENT_RUNS))));
    runs.replaceChildren(jobs.jobs.length ? h("table", { class: "table compact", id: "runs-table" },
      h("caption", { class: "sr-only", text: "Runs, newest first" }),
      h("thead", {}, h("tr", {}, ["Job", "Status", "Version", "Trigger", "Scheduled for",
                                  "Created", "Duration"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, jobs.jobs.map((j) => h("tr", { dataset: { jobId: j.job_id } },
        h("td", {}, h("a", { href: `/ui/jobs/${enc(j.job_id)}`, "data-nav": true, class: "mono",
                             text: j.job_id.slice(0, 8) })),
        h("td", {}, statusBadge(j.status, j.suspend)),
        h("td", { text: j.pipeline ? `v${j.pipeline.version}` : "—" }),
        h("td", { text: j.pipeline ? j.pipeline.trigger : "—" }),
        h("td", {}, timeEl(j.pipeline && j.pipeline.scheduled_for, false)),
        h("td", {}, timeEl(j.created_at)),
        h("td", { text: jobDuration(j) })))))
      : h("p", { class: "muted", text: "No runs yet." }));
    versions.replaceChildren(h("table", { class: "table compact", id: "versions-table" },
      h("caption", { class: "sr-only", text: "Versions, newest first" }),
      h("thead", {}, h("tr", {}, ["Version", "Created", "Spec"].map(
        (t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, vs.versions.map((v) => h("tr", { dataset: { version: v.version } },
        h("th", { scope: "row", text: `v${v.version}` }),
        h("td", {}, timeEl(v.created_at)),
        h("td", {}, h("details", {}, h("summary", { text: "Show" }),
          h("pre", { class: "params mono", text: JSON.stringify(v.spec, null, 2) }))))))));
    document.title = `${p.name} · Pipelines · Strata`;
    await tables.update(p);
  });
  view.append(
    h("section", { class: "card", "aria-labelledby": "runs-title" },
      h("h2", { id: "runs-title", text: "Runs" }), runs),
    tables.section,
    h("section", { class: "card", "aria-labelledby": "versions-title" },
      h("h2", { id: "versions-title", text: "Versions" }), versions));
  return page;
}
