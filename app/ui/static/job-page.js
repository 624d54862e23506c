/* /ui/jobs/{id}: one job, live. The action buttons follow the job's `allowed_actions` (the
 * server's machine decides), the diagram is drawn from the machine the API serves. */

import { api, fetchMachine } from "./api.js";
import { $, append, h, problemAlert, toast } from "./dom.js";
import { fmtInt, num, timeEl } from "./format.js";
import { renderDiagram } from "./fsm-view.js";
import { showOutput } from "./job-output.js";
import { layerInspector } from "./job-layers.js";
import { conditionsView, eventItems, layersView } from "./job-sections.js";
import { tryIt } from "./job-try.js";
import { STAGES, STOPPED, doneStates, jobDuration, progressBar, stageProgress, statusBadge,
         updateProgress } from "./jobs.js";
import { LiveJob } from "./live.js";

const ACTIONS = [
  { name: "cancel", label: "Cancel", done: "Cancelled", kind: "danger" },
  { name: "suspend", label: "Suspend", done: "Suspended", kind: "secondary" },
  { name: "resume", label: "Resume", done: "Resumed", kind: "secondary" },
  { name: "retry", label: "Retry", done: "Retry started", kind: "primary" },
];
const LIVE_TEXT = {
  connecting: "Connecting…", live: "Live", reconnecting: "Reconnecting…",
  polling: "Refreshing every 2 s", ended: "Finished",
};

function skeleton() {
  return {
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
}

function layout(view, el, inspector, dryRun) {
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
    dryRun.section,
    inspector.section,
    el.outputSection,
    h("div", { class: "grid-2" },
      h("section", { class: "card", "aria-labelledby": "events-title" },
        h("h2", { id: "events-title", text: "Events" }), el.events),
      h("section", { class: "card", "aria-labelledby": "conditions-title" },
        h("h2", { id: "conditions-title", text: "Conditions" }), el.conditions)),
    h("section", { class: "card" },
      h("details", {}, h("summary", { text: "Parameters (as submitted, defaults filled)" }),
        el.params)));
}

/** A run's pipeline: a link to it, its version and what started the run. */
function pipelineLink(run) {
  return h("span", { class: "pipeline-ref" },
    h("a", { href: `/ui/pipelines/${encodeURIComponent(run.name)}`, "data-nav": true,
             id: "pipeline-link", text: run.name }),
    ` v${run.version} · ${run.trigger}`,
    run.scheduled_for ? [" · for ", timeEl(run.scheduled_for, false)] : null);
}

export function jobPage(view, jobId) {
  document.title = "Job · Strata";
  const jobUrl = `/v1/jobs/${encodeURIComponent(jobId)}`;
  const el = skeleton();
  let job = null;
  let disposed = false;
  let eventsKey = "";
  let diagramKey = "";
  let outputLoaded = false;
  let machine = null;
  let drawnVertical = false;

  const buttons = new Map(ACTIONS.map((action) => [action.name, h("button", {
    type: "button", class: `btn btn-${action.kind}`, dataset: { action: action.name },
    disabled: true, onclick: () => act(action) }, action.label)]));
  el.actions.append(...buttons.values());
  const inspector = layerInspector(jobUrl, { disposed: () => disposed });
  const dryRun = tryIt({ job: () => job, disposed: () => disposed });
  el.actions.append(dryRun.button);
  layout(view, el, inspector, dryRun);

  const live = new LiveJob(jobUrl, {
    onJob: applyJob,
    onDeleted,
    onState: (state) => setLive(state),
    finished: () => Boolean(job && STOPPED.has(job.status)),
  });

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
      item("Attempt", String(job.attempt ?? 1)),
      job.pipeline ? item("Pipeline", pipelineLink(job.pipeline)) : null]);
    el.description.hidden = !job.description;
    el.description.textContent = job.description || "";
    const allowed = new Set(job.allowed_actions || []);
    for (const [name, button] of buttons) {
      if (button.getAttribute("aria-busy") !== "true") button.disabled = !allowed.has(name);
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
    el.batch.textContent = b && b.stage && job.status !== "Succeeded"
      ? `Current task: ${b.stage}, attempt ${b.attempt ?? 1}, ${b.status || "running"}` +
        (num(b.total) ? ` · ${fmtInt(b.processed)} of ${fmtInt(b.total)} rows` : "")
      : "";
  }

  // -- the state diagram: the machine is asked for once, redrawn as the job moves

  const narrow = () => (el.diagram.clientWidth || window.innerWidth) < 600;

  function drawDiagram() {
    if (!machine || !job) return;
    drawnVertical = narrow();
    el.diagram.replaceChildren(renderDiagram(machine, job, drawnVertical));
  }

  const resizes = new ResizeObserver(() => {
    if (machine && narrow() !== drawnVertical) drawDiagram();
  });
  resizes.observe(el.diagram);

  async function renderDiagramFor() {
    const key = `${job.status}|${job.suspend}|${[...doneStates(job)].join(",")}`;
    if (key === diagramKey) return;
    diagramKey = key;
    const status = job.status;
    try {
      machine = await fetchMachine();
    } catch (err) {
      if (!disposed && err.status !== 401) {
        el.diagramCaption.textContent = `The state machine could not be loaded: ${err.message}`;
      }
      diagramKey = "";
      return;
    }
    if (disposed || diagramKey !== key) return;
    drawDiagram();
    el.diagramCaption.textContent = `Current state: ${status}` +
      (job.suspend && !STOPPED.has(status) ? " (suspended: no new stage starts)" : "");
  }

  async function loadEvents() {
    try {
      const data = await api(`${jobUrl}/events`);
      if (!disposed) el.events.replaceChildren(...eventItems(data.events || []));
    } catch (err) {
      if (err.status !== 401) {
        el.events.replaceChildren(h("li", { class: "muted", text: `Could not load events: ${err.message}` }));
      }
    }
  }

  async function loadOutput() {
    outputLoaded = true;
    outputLoaded = await showOutput(el.outputSection, jobUrl, job, {
      disposed: () => disposed,
      onDownloadError: (err) => {
        if (err.status !== 401) showAlert("Could not download the output", err);
      },
    });
  }

  function applyJob(next) {
    if (disposed || !next) return;
    const before = job;
    job = next;
    renderHead();
    renderProgress();
    el.conditions.replaceChildren(conditionsView(job.conditions || []));
    el.layers.replaceChildren(layersView(job));
    inspector.update(job);
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
      live.stop();
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
      if (!STOPPED.has(updated.status)) live.start();
    } catch (err) {
      button.removeAttribute("aria-busy");
      if (err.status !== 401) showAlert(`Could not ${action.name} the job`, err);
      if (job) renderHead();
    }
  }

  function setLive(state, text) {
    el.live.dataset.state = state;
    $(".live-text", el.live).textContent = text || LIVE_TEXT[state];
  }

  function onDeleted() {
    live.stop();
    setLive("ended", "Deleted");
    el.alert.replaceChildren(h("div", { class: "alert", role: "alert" },
      h("strong", { text: "This job was deleted." })));
    for (const button of buttons.values()) button.disabled = true;
  }

  (async () => {
    try {
      applyJob(await api(jobUrl));
      if (!STOPPED.has(job.status)) live.start();
    } catch (err) {
      if (disposed || err.status === 401) return;
      el.title.textContent = err.status === 404 ? "Job not found" : "Could not load the job";
      setLive("ended", "Not available");
      el.alert.replaceChildren(problemAlert(
        err.status === 404 ? `No job ${jobId} here.` : "The job could not be loaded.", err));
    }
  })();

  return { dispose() { disposed = true; live.close(); resizes.disconnect(); } };
}
