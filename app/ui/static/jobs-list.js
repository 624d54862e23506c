/* /ui: the job list, newest first, polled every 2 s, filtered by status. */

import { api } from "./api.js";
import { $, h, problemAlert } from "./dom.js";
import { intFmt, timeEl } from "./format.js";
import { ALL_STATES, STOPPED, jobDuration, progressBar, statusBadge, updateProgress } from "./jobs.js";

const LIST_POLL_MS = 2000;
const enc = encodeURIComponent;

export function listPage(view) {
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
