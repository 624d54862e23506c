/* "Try it": the job's {name, params} sent again as a dry run (POST /v1/jobs?dry_run=true), which
 * creates nothing and answers each layer's columns, counts and first rows. */

import { api } from "./api.js";
import { h, problemAlert } from "./dom.js";
import { fmtInt } from "./format.js";
import { rowsTable } from "./job-layers.js";

export function tryIt({ job, disposed }) {
  const section = h("section", { class: "card", id: "dry-run", hidden: true,
                                 "aria-labelledby": "dry-run-title" });
  const button = h("button", { type: "button", class: "btn btn-secondary", id: "try-it",
                               text: "Try it", onclick: run });

  async function run() {
    const current = job();
    if (!current) return;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    section.hidden = false;
    section.replaceChildren(h("h2", { id: "dry-run-title", text: "Dry run" }),
      h("p", { class: "muted small", text: "Running every layer on a sample of the source…" }));
    try {
      const result = await api("/v1/jobs?dry_run=true", { method: "POST",
        body: { name: current.name, params: current.params } });
      if (!disposed()) section.replaceChildren(...resultView(result).flat());
    } catch (err) {
      if (!disposed() && err.status !== 401) {
        section.replaceChildren(h("h2", { id: "dry-run-title", text: "Dry run" }),
          problemAlert("The dry run was refused", err));
      } else if (err.status === 401) section.hidden = true;
    } finally {
      button.disabled = false;
      button.removeAttribute("aria-busy");
    }
    if (!disposed()) section.scrollIntoView({ block: "start" });
  }

  return { button, section };
}

function resultView(result) {
  return [
    h("h2", { id: "dry-run-title", text: "Dry run" }),
    h("p", { class: "muted small", id: "dry-run-caption",
             text: `On the first ${fmtInt(result.sample_rows)} source rows; nothing was created.` }),
    Object.entries(result.layers).map(([name, layer]) => h("div", {
      class: "dry-layer", dataset: { layer: name } },
      h("h3", {}, h("span", { class: "layer-tag", text: name.toUpperCase() }),
        h("span", { class: "dry-counts", text: ` ${fmtInt(layer.rows)} rows · ` +
          `${fmtInt(layer.rejects)} rejects · ${fmtInt(layer.deduped)} deduped` })),
      h("p", { class: "small dry-columns" }, layer.columns.map((c, i) => [
        i ? " · " : null, h("code", { text: c.name }), h("span", { class: "muted", text: ` ${c.type}` })])),
      layer.sample.length
        ? rowsTable(layer.sample, `${name} sample rows`, `dry-${name}-table`)
        : h("p", { class: "muted", text: "No rows." }))),
  ];
}
