/* Client-side routing: /ui is the job list, /ui/jobs/{id} one job, /ui/pipelines[/{name}]
 * the pipelines, /ui/webhooks the webhooks; links marked data-nav change the page without a
 * reload. */

import { $ } from "./dom.js";
import { jobPage } from "./job-page.js";
import { listPage } from "./jobs-list.js";
import { pipelinePage, pipelinesPage } from "./pipelines.js";
import { webhooksPage } from "./webhooks.js";

let page = null;

export function route({ focus = false } = {}) {
  if (page) page.dispose();
  const view = $("#view");
  view.replaceChildren();
  page = pageFor(view, location.pathname);
  if (focus) {
    const heading = $("h1", view);
    if (heading) heading.focus();
  }
}

const ROUTES = [
  [/^\/ui\/jobs\/([^/]+)\/?$/, jobPage],
  [/^\/ui\/pipelines\/?$/, pipelinesPage],
  [/^\/ui\/pipelines\/([^/]+)\/?$/, pipelinePage],
  [/^\/ui\/webhooks\/?$/, webhooksPage],
];

function pageFor(view, path) {
  for (const [pattern, open] of ROUTES) {
    const match = path.match(pattern);
    if (match) return open(view, ...match.slice(1).map(decodeURIComponent));
  }
  return listPage(view);
}

function navigate(href) {
  history.pushState(null, "", href);
  route({ focus: true });
  window.scrollTo(0, 0);
}

export function followLinks() {
  document.addEventListener("click", (event) => {
    const link = event.target.closest && event.target.closest("a[data-nav]");
    if (!link || event.defaultPrevented || event.button !== 0) return;
    if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
    event.preventDefault();
    navigate(link.getAttribute("href"));
  });
  window.addEventListener("popstate", () => route({ focus: true }));
}
