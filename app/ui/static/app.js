/* Strata dashboard: a plain-JavaScript client of the public API (ES modules, no framework, no
 * build step).
 *
 *   /ui            the job list, polled every 2 s                        jobs-list.js
 *   /ui/jobs/{id}  one job, live over Server-Sent Events                 job-page.js, live.js
 *                  its layers' rows and rejects, a dry run ("Try it")     job-layers.js, job-try.js
 *   /ui/pipelines  pipelines, schedules, recent runs; one pipeline        pipelines.js
 *   /ui/webhooks   webhooks and their deliveries                          webhooks.js
 *
 * The server decides what is legal: a job's `allowed_actions` enable its buttons, and the state
 * diagram is drawn from the machine GET /v1/fsm serves as data (fsm-view.js). Every value from
 * the API goes into the page as text (dom.js), never as HTML.
 */

import { initAuth } from "./auth.js";
import { followLinks, route } from "./router.js";

initAuth(() => route());
followLinks();
route();
