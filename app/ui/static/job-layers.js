/* A job's layers up close: the first rows of any written layer, and the rows its checks rejected
 * (counted by reason, browsable a page at a time). */

import { api } from "./api.js";
import { h, problemAlert } from "./dom.js";
import { columnFormat, fmtInt, fmtNumber, intFmt } from "./format.js";
import { STAGES } from "./jobs.js";

const PREVIEW_ROWS = 20;
const PAGE_ROWS = 20;
const COUNT_ROWS = 10000;

/** A table of JSON rows, numbers right-aligned and formatted by column. */
export function rowsTable(rows, caption, id) {
  const columns = Object.keys(rows[0]);
  const numeric = new Set(columns.filter(
    (c) => rows.every((r) => r[c] === null || typeof r[c] === "number")));
  const format = Object.fromEntries(columns.map(
    (c) => [c, numeric.has(c) ? columnFormat(rows.map((r) => r[c])) : fmtNumber]));
  return h("div", { class: "table-scroll output-scroll", tabindex: "0", role: "region",
                    "aria-label": caption },
    h("table", { class: "table compact", id },
      h("caption", { class: "sr-only", text: caption }),
      h("thead", {}, h("tr", {}, columns.map((c) => h("th", {
        scope: "col", class: numeric.has(c) ? "num" : null, text: c })))),
      h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => h("td", {
        class: numeric.has(c) ? "num" : null,
        text: typeof r[c] === "object" && r[c] !== null ? JSON.stringify(r[c]) : format[c](r[c]),
      })))))));
}

export function layerInspector(jobUrl, { disposed }) {
  let job = null;
  let layer = "";
  let view = "";
  let offset = 0;
  const body = h("div", { id: "layer-view", "aria-live": "polite" },
    h("p", { class: "muted", text: "Pick a written layer to see its rows or its rejects." }));
  const buttons = h("div", { class: "actions layer-buttons", role: "toolbar",
                             "aria-label": "Layer data" });
  const section = h("section", { class: "card", id: "layer-data",
                                 "aria-labelledby": "layer-data-title" },
    h("h2", { id: "layer-data-title", text: "Layer data" }), buttons, body);

  function update(next) {
    job = next;
    const layers = (job.results || {}).layers || {};
    const key = STAGES.map((s) => (layers[s.layer] ? s.layer : "")).join(",");
    if (buttons.dataset.key === key) return;
    buttons.dataset.key = key;
    buttons.replaceChildren(...STAGES.flatMap((s) => {
      const written = Boolean(layers[s.layer]);
      const name = s.layer.toUpperCase();
      return [
        h("button", { type: "button", class: "btn btn-secondary btn-small", disabled: !written,
                      dataset: { layer: s.layer, view: "rows" }, text: `${name} rows`,
                      onclick: () => show(s.layer, "rows", 0) }),
        h("button", { type: "button", class: "btn btn-ghost btn-small", disabled: !written,
                      dataset: { layer: s.layer, view: "rejects" },
                      text: `${name} rejects (${fmtInt(written ? layers[s.layer].rejects : null)})`,
                      onclick: () => show(s.layer, "rejects", 0) }),
      ];
    }));
  }

  async function show(which, kind, at) {
    layer = which;
    view = kind;
    offset = at;
    body.replaceChildren(h("p", { class: "muted small", text: "Loading…" }));
    const url = `${jobUrl}/layers/${which}`;
    try {
      const content = kind === "rows" ? await preview(url) : await rejects(url, at);
      if (!disposed() && layer === which && view === kind && offset === at) {
        body.replaceChildren(...content.filter(Boolean));
      }
    } catch (err) {
      if (err.status !== 401 && !disposed()) {
        body.replaceChildren(problemAlert(`Could not load the ${which} ${kind}`, err));
      }
    }
  }

  async function preview(url) {
    const rows = await api(`${url}?format=json&limit=${PREVIEW_ROWS}`);
    const total = (((job.results || {}).layers || {})[layer] || {}).rows;
    const caption = `${layer.toUpperCase()}: first ${intFmt.format(rows.length)} of ${fmtInt(total)} rows`;
    return [h("h3", { id: "layer-view-title", text: caption }),
            rows.length ? rowsTable(rows, caption, "layer-rows-table")
              : h("p", { class: "muted", text: "The layer has no rows." })];
  }

  async function rejects(url, at) {
    const total = (((job.results || {}).layers || {})[layer] || {}).rejects || 0;
    const [all, rows] = await Promise.all([
      at === 0 ? api(`${url}/rejects?format=json&limit=${COUNT_ROWS}`) : null,
      api(`${url}/rejects?format=json&limit=${PAGE_ROWS}&offset=${at}`)]);
    const title = h("h3", { id: "layer-view-title",
                            text: `${layer.toUpperCase()} rejects: ${fmtInt(total)} rows` });
    if (!rows.length && at === 0) {
      return [title, h("p", { class: "muted", text: "No rows were rejected here." })];
    }
    const out = [title];
    if (all) {
      const counts = new Map();
      for (const r of all) counts.set(r._reject_reason, (counts.get(r._reject_reason) || 0) + 1);
      out.push(h("table", { class: "table compact", id: "reject-reasons" },
        h("caption", { class: "sr-only", text: "Rejects by reason" }),
        h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Reason" }),
          h("th", { scope: "col", class: "num", text: "Rows" }))),
        h("tbody", {}, [...counts].sort((a, b) => b[1] - a[1]).map(([reason, n]) => h("tr", {
          dataset: { reason } }, h("th", { scope: "row", text: reason }),
          h("td", { class: "num", text: fmtInt(n) }))))),
        all.length >= COUNT_ROWS
          ? h("p", { class: "muted small", text: `Counted over the first ${fmtInt(COUNT_ROWS)} rejects.` })
          : null);
    }
    const last = Math.min(at + rows.length, total || at + rows.length);
    out.push(
      h("div", { class: "pager" },
        h("button", { type: "button", class: "btn btn-ghost btn-small", text: "← Previous",
                      disabled: at === 0, onclick: () => show(layer, "rejects", Math.max(0, at - PAGE_ROWS)) }),
        h("span", { class: "muted small", id: "rejects-range",
                    text: `Rows ${fmtInt(at + 1)} to ${fmtInt(last)} of ${fmtInt(total)}` }),
        h("button", { type: "button", class: "btn btn-ghost btn-small", text: "Next →",
                      disabled: at + rows.length >= total || rows.length < PAGE_ROWS,
                      onclick: () => show(layer, "rejects", at + PAGE_ROWS) })),
      rowsTable(rows, `${layer} rejected rows`, "rejects-table"));
    return out;
  }

  return { section, update };
}
