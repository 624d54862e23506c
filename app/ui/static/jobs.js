/* What the pages show of a job: its stages, progress, status badge and duration.
 * Which actions are legal is not decided here: the API says so in `allowed_actions`. */

import { $, h } from "./dom.js";
import { clamp, fmtDuration } from "./format.js";

export const STAGES = [
  { status: "LandingToODS", layer: "ods", label: "Landing → ODS" },
  { status: "ODSToDWD", layer: "dwd", label: "ODS → DWD" },
  { status: "DWDToDWS", layer: "dws", label: "DWD → DWS" },
  { status: "DWSToDS", layer: "ds", label: "DWS → DS" },
];
const FLOW = ["Pending", ...STAGES.map((s) => s.status), "Completed", "Succeeded"];
export const ALL_STATES = [...FLOW, "Failed", "Cancelled"];
export const STOPPED = new Set(["Succeeded", "Failed", "Cancelled"]);

export function jobDuration(job) {
  if (!job.started_at) return "—";
  const end = job.ended_at ? new Date(job.ended_at) : new Date();
  return fmtDuration(end - new Date(job.started_at));
}

export function statusClass(status) {
  if (status === "Succeeded") return "ok";
  if (status === "Failed") return "bad";
  if (status === "Cancelled") return "warn";
  if (status === "Pending") return "idle";
  return "run";
}

export function statusBadge(status, suspended) {
  return h("span", { class: "badges" },
    h("span", { class: `badge badge-${statusClass(status)}`, dataset: { status } },
      h("span", { class: "dot", "aria-hidden": "true" }), status),
    suspended && !STOPPED.has(status)
      ? h("span", { class: "badge badge-paused", text: "Suspended" }) : null);
}

export function stageProgress(job) {
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

/** The states a job has been through (for the diagram). */
export function doneStates(job) {
  const done = new Set();
  if (!job) return done;
  if (job.started_at) done.add("Pending");
  for (const s of stageProgress(job)) if (s.state === "done") done.add(s.status);
  if (job.status === "Succeeded") done.add("Completed");
  return done;
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

export function progressBar(job, { large = false } = {}) {
  const bar = h("div", { class: large ? "progress progress-large" : "progress",
                         role: "progressbar", "aria-valuemin": "0", "aria-valuemax": "100" },
    STAGES.map((stage) => h("div", { class: "seg", dataset: { stage: stage.status } },
      h("div", { class: "seg-fill" }))));
  const caption = h("span", { class: "progress-text" });
  const wrap = h("div", { class: "progress-wrap" }, bar, caption);
  updateProgress(wrap, job);
  return wrap;
}

export function updateProgress(wrap, job) {
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
