/* A succeeded job's DS output: a preview of the first rows, and the whole as CSV. */

import { api, request } from "./api.js";
import { h, problemAlert } from "./dom.js";
import { fmtInt, intFmt } from "./format.js";
import { rowsTable } from "./job-layers.js";

const PREVIEW_ROWS = 50;

/** Fill `section` with the preview; false when it could not be loaded (try again later). */
export async function showOutput(section, jobUrl, job, { disposed, onDownloadError }) {
  const total = ((job.results || {}).output || {}).rows ??
    (((job.results || {}).layers || {}).ds || {}).rows;
  const download = h("button", { type: "button", class: "btn btn-secondary btn-small",
                                 text: "Download CSV",
                                 onclick: () => downloadCsv(jobUrl, job).catch(onDownloadError) });
  const head = () => h("div", { class: "section-head" },
    h("h2", { id: "output-title", text: "DS output preview" }), download);
  section.hidden = false;
  section.replaceChildren(head(), h("p", { class: "muted small", text: "Loading the first rows…" }));
  try {
    const rows = await api(`${jobUrl}/output?format=json&limit=${PREVIEW_ROWS}`);
    if (disposed()) return true;
    const caption = `First ${intFmt.format(rows.length)} of ${fmtInt(total ?? rows.length)} rows`;
    section.replaceChildren(head(),
      h("p", { class: "muted small", id: "output-caption", text: caption }),
      rows.length ? rowsTable(rows, caption, "output-table")
        : h("p", { class: "muted", text: "The DS layer has no rows." }));
    return true;
  } catch (err) {
    if (err.status !== 401) {
      section.replaceChildren(h("h2", { id: "output-title", text: "DS output preview" }),
        problemAlert("Could not load the output", err));
    }
    return false;
  }
}

async function downloadCsv(jobUrl, job) {
  const resp = await request(`${jobUrl}/output?format=csv&limit=1000000`, { accept: "text/csv" });
  const url = URL.createObjectURL(await resp.blob());
  const a = h("a", { href: url, download: `${job.name}-${job.job_id.slice(0, 8)}-ds.csv` });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}
