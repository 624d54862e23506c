/* The parts of a job page that only show data: conditions, layer results, events. */

import { h } from "./dom.js";
import { fmtInt, fmtSeconds, timeEl } from "./format.js";
import { STAGES, stageProgress, statusClass } from "./jobs.js";

export function conditionsView(conditions) {
  if (!conditions.length) return h("p", { class: "muted", text: "No conditions yet." });
  return h("table", { class: "table compact", id: "conditions-table" },
    h("caption", { class: "sr-only", text: "Conditions" }),
    h("thead", {}, h("tr", {}, ["Type", "Status", "Reason", "Message", "Changed"].map(
      (t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, conditions.map((c) => h("tr", { dataset: { type: c.type } },
      h("th", { scope: "row", text: c.type }),
      h("td", {}, h("span", { class: `pill pill-${String(c.status).toLowerCase()}`,
                              text: c.status })),
      h("td", { text: c.reason }),
      h("td", { class: "wrap", text: c.message || "" }),
      h("td", {}, timeEl(c.last_transition_time))))));
}

export function layersView(job) {
  const layers = ((job.results || {}).layers) || {};
  const progress = stageProgress(job);
  return h("table", { class: "table", id: "layers-table" },
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
    })));
}

/** The events timeline's items, oldest first. */
export function eventItems(events) {
  if (!events.length) return [h("li", { class: "muted", text: "No events yet." })];
  return events.map((e) => h("li", {
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
      timeEl(e.at, false))));
}
