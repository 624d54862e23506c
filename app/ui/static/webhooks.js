/* /ui/webhooks: the caller's webhooks, and a webhook's deliveries (attempts, last answer, next
 * try), polled every 5 s. */

import { api } from "./api.js";
import { h, problemAlert } from "./dom.js";
import { fmtInt, timeEl } from "./format.js";

const POLL_MS = 5000;
const enc = encodeURIComponent;
const DELIVERY_CLASS = { delivered: "ok", failed: "bad", pending: "run" };

export function webhooksPage(view) {
  document.title = "Webhooks · Strata";
  let selected = new URLSearchParams(location.search).get("webhook") || "";
  let timer = null;
  let disposed = false;
  const meta = h("p", { class: "muted small", id: "webhooks-meta", text: "Loading…" });
  const errorBox = h("div", { class: "error-slot" });
  const list = h("div", { class: "table-scroll" });
  const deliveries = h("section", { class: "card", id: "deliveries", hidden: true,
                                    "aria-labelledby": "deliveries-title" });
  view.append(
    h("div", { class: "page-head" },
      h("div", {}, h("h1", { tabindex: "-1", text: "Webhooks" }), meta)),
    errorBox, h("section", { class: "card card-flush" }, list), deliveries);

  function select(id) {
    selected = id;
    history.replaceState(null, "", `/ui/webhooks?webhook=${enc(id)}`);
    refresh();
  }

  function listView(data) {
    if (!data.webhooks.length) {
      return h("div", { class: "empty" }, h("p", { class: "empty-title", text: "No webhooks yet" }),
        h("p", { class: "muted" }, "Add one with ", h("code", { text: "POST /v1/webhooks" }), "."));
    }
    return h("table", { class: "table", id: "webhooks-table" },
      h("caption", { class: "sr-only", text: "Webhooks" }),
      h("thead", {}, h("tr", {}, ["URL", "Events", "Pipeline", "Created", ""].map(
        (t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, data.webhooks.map((w) => h("tr", {
        dataset: { webhookId: w.webhook_id }, class: w.webhook_id === selected ? "row-selected" : "" },
        h("td", { class: "mono wrap", text: w.url }),
        h("td", { text: w.events.join(", ") }),
        h("td", { text: w.pipeline || "any" }),
        h("td", {}, timeEl(w.created_at)),
        h("td", {}, h("button", { type: "button", class: "btn btn-ghost btn-small",
          "aria-pressed": String(w.webhook_id === selected), text: "Deliveries",
          onclick: () => select(w.webhook_id) }))))));
  }

  function deliveriesView(hook, data) {
    return [
      h("h2", { id: "deliveries-title", text: `Deliveries to ${hook ? hook.url : selected}` }),
      h("p", { class: "muted small", id: "deliveries-meta",
               text: `${fmtInt(data.total)} deliver${data.total === 1 ? "y" : "ies"}, newest first` }),
      data.deliveries.length ? h("div", { class: "table-scroll" }, h("table", {
        class: "table compact", id: "deliveries-table" },
        h("caption", { class: "sr-only", text: "Deliveries" }),
        h("thead", {}, h("tr", {}, ["Event", "Job", "Status", "Attempts", "Last answer",
                                    "Next attempt", "Created"].map(
          (t) => h("th", { scope: "col", text: t })))),
        h("tbody", {}, data.deliveries.map((d) => h("tr", { dataset: { deliveryId: d.id } },
          h("td", { text: d.type }),
          h("td", {}, d.job_id ? h("a", { href: `/ui/jobs/${enc(d.job_id)}`, "data-nav": true,
                                          class: "mono", text: d.job_id.slice(0, 8) }) : "—"),
          h("td", {}, h("span", { class: `badge badge-${DELIVERY_CLASS[d.status] || "idle"}`,
                                  dataset: { status: d.status }, text: d.status })),
          h("td", { class: "num", dataset: { field: "attempts" }, text: fmtInt(d.attempts) }),
          h("td", { class: "wrap", dataset: { field: "last" },
                    text: d.last_status ? `HTTP ${d.last_status}` : d.last_error || "—" }),
          h("td", {}, timeEl(d.next_attempt_at, false)),
          h("td", {}, timeEl(d.created_at)))))))
        : h("p", { class: "muted", text: "Nothing was sent yet." }),
    ];
  }

  async function refresh() {
    clearTimeout(timer);
    if (disposed) return;
    let again = true;
    try {
      const data = await api("/v1/webhooks?limit=500");
      const hook = data.webhooks.find((w) => w.webhook_id === selected);
      const sent = selected ? await api(`/v1/webhooks/${enc(selected)}/deliveries?limit=50`) : null;
      if (disposed) return;
      list.replaceChildren(listView(data));
      meta.textContent = `${fmtInt(data.total)} webhook${data.total === 1 ? "" : "s"} · refreshed every 5 s`;
      deliveries.hidden = !sent;
      if (sent) deliveries.replaceChildren(...deliveriesView(hook, sent));
      errorBox.replaceChildren();
    } catch (err) {
      if (err.status === 401) again = false;
      else errorBox.replaceChildren(problemAlert("Could not load the webhooks", err));
    }
    if (!disposed && again) timer = setTimeout(refresh, POLL_MS);
  }

  refresh();
  return { dispose() { disposed = true; clearTimeout(timer); } };
}
