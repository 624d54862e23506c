/* A pipeline's tables (layers with a `table`): the current rows a page at a time, every version
 * with the run that committed it, and time travel (any version's rows). Reads
 * /v1/pipelines/{name}/tables/{layer}?limit&offset&version and …/history. */

import { api } from "./api.js";
import { h, problemAlert } from "./dom.js";
import { fmtInt, timeEl } from "./format.js";
import { rowsTable } from "./job-layers.js";
import { STAGES } from "./jobs.js";

const PAGE_ROWS = 20;
const enc = encodeURIComponent;

/** The layers of a pipeline's spec that have a table, in stage order. */
export function tableLayers(params) {
  const layers = (params && params.layers) || {};
  return STAGES.map((s) => s.layer).filter((l) => layers[l] && layers[l].table);
}

function modeWords(table) {
  if (table.mode === "merge") return `merge by ${(table.keys || []).join(", ")}`;
  if (table.mode === "replace_partitions") return `replace partitions by ${(table.partition_by || []).join(", ")}`;
  return table.mode;
}

/** One table: history, a version picker and a paged preview. `refresh()` re-reads the history
 * (each poll of the page); the preview follows the latest version unless one was chosen. */
function tableView(name, layer, spec, disposed) {
  const url = `/v1/pipelines/${enc(name)}/tables/${layer}`;
  const title = layer.toUpperCase();
  let versions = null;
  let chosen = "";  // "" = the latest
  let offset = 0;
  let shown = null;  // the key of what the preview shows
  const picker = h("select", { id: `table-version-${layer}`, "aria-label": `${title} table version`,
                               onchange: () => choose(picker.value) });
  const history = h("div", { class: "table-scroll", id: `table-history-${layer}` });
  const preview = h("div", { id: `table-preview-${layer}`, "aria-live": "polite" });
  const section = h("section", { class: "card", id: `table-${layer}`, dataset: { layer },
                                 "aria-labelledby": `table-title-${layer}` },
    h("h2", { id: `table-title-${layer}`, text: `Table: ${title}` }),
    h("p", { class: "muted small", text: `Delta Lake, ${modeWords(spec)}; every committed run is a version.` }),
    h("h3", { text: "History" }), history,
    h("h3", { text: "Rows" }),
    h("div", { class: "actions table-version" }, h("label", { for: picker.id, text: "Version" }), picker),
    preview);

  function latest() { return versions && versions.length ? versions[0].version : null; }

  function renderHistory() {
    picker.replaceChildren(h("option", { value: "", text: `latest (v${latest()})` }),
      ...versions.map((v) => h("option", { value: String(v.version), text: `v${v.version} · ${v.operation}` })));
    picker.value = chosen;
    history.replaceChildren(h("table", { class: "table compact", id: `table-versions-${layer}` },
      h("caption", { class: "sr-only", text: `${title} table versions, newest first` }),
      h("thead", {}, h("tr", {}, ["Version", "Committed", "Operation", "Run", "Rows added", ""].map(
        (t) => h("th", { scope: "col", class: t === "Rows added" ? "num" : null, text: t })))),
      h("tbody", {}, versions.map((v) => h("tr", { dataset: { version: v.version } },
        h("th", { scope: "row", text: `v${v.version}` }),
        h("td", {}, timeEl(v.committed_at)),
        h("td", { text: v.operation }),
        h("td", {}, v.job_id ? h("a", { href: `/ui/jobs/${enc(v.job_id)}`, "data-nav": true,
                                        class: "mono", text: v.job_id.slice(0, 8) }) : "—"),
        h("td", { class: "num", text: fmtInt(v.rows_added) }),
        h("td", {}, h("button", { type: "button", class: "btn btn-ghost btn-small",
                                  "aria-label": `Show the rows of v${v.version}`, text: "Show rows",
                                  onclick: () => choose(String(v.version)) })))))));
  }

  async function showRows() {
    const version = chosen === "" ? latest() : Number(chosen);
    const key = `${version}:${offset}`;
    if (shown === key) return;
    shown = key;
    const at = offset;
    try {
      const rows = await api(`${url}?format=json&limit=${PAGE_ROWS + 1}&offset=${at}&version=${version}`);
      if (disposed() || shown !== key) return;
      const page = rows.slice(0, PAGE_ROWS);
      const label = `${title} at v${version}${chosen === "" ? " (latest)" : ""}`;
      preview.replaceChildren(
        h("div", { class: "pager" },
          h("button", { type: "button", class: "btn btn-ghost btn-small", text: "← Previous",
                        disabled: at === 0, onclick: () => page_(Math.max(0, at - PAGE_ROWS)) }),
          h("span", { class: "muted small", id: `table-range-${layer}`, dataset: { version },
                      text: page.length ? `${label}: rows ${fmtInt(at + 1)} to ${fmtInt(at + page.length)}`
                        : `${label}: no rows here` }),
          h("button", { type: "button", class: "btn btn-ghost btn-small", text: "Next →",
                        disabled: rows.length <= PAGE_ROWS, onclick: () => page_(at + PAGE_ROWS) })),
        page.length ? rowsTable(page, `${label} rows`, `table-rows-${layer}`) : null);
    } catch (err) {
      shown = null;
      if (err.status !== 401 && !disposed()) {
        preview.replaceChildren(problemAlert(`Could not load the ${title} table`, err));
      }
    }
  }

  function page_(at) {
    offset = at;
    showRows();
  }

  function choose(value) {
    chosen = value;
    picker.value = value;
    offset = 0;
    showRows();
  }

  async function refresh() {
    let next;
    try {
      next = (await api(`${url}/history`)).versions;
    } catch (err) {
      if (err.status !== 404) throw err;
      next = [];
    }
    if (disposed()) return;
    const changed = !versions || versions.length !== next.length
      || (next.length && versions[0].version !== next[0].version);
    versions = next;
    if (!versions.length) {
      history.replaceChildren(h("p", { class: "muted", text: "No run has committed to this table yet." }));
      picker.replaceChildren();
      preview.replaceChildren();
      return;
    }
    if (changed) renderHistory();
    await showRows();
  }

  return { section, refresh };
}

/** The tables of a pipeline, made when its spec is first seen and re-made if the set changes. */
export function pipelineTables(name, { disposed }) {
  const section = h("div", { id: "pipeline-tables" });
  let key = null;
  let views = [];
  async function update(pipeline) {
    const layers = tableLayers(pipeline.params);
    const next = layers.map((l) => `${l}:${JSON.stringify(pipeline.params.layers[l].table)}`).join(",");
    if (next !== key) {
      key = next;
      views = layers.map((l) => tableView(name, l, pipeline.params.layers[l].table, disposed));
      section.replaceChildren(...views.map((v) => v.section));
    }
    await Promise.all(views.map((v) => v.refresh()));
  }
  return { section, update };
}
