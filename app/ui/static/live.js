/* One job, live: Server-Sent Events from GET /v1/jobs/{id}/watch (EventSource; a streamed
 * fetch when a token must be sent, since EventSource cannot send headers), else polling. */

import { api, readProblem } from "./api.js";
import { authHeaders, getToken, showAuth } from "./auth.js";

const POLL_MS = 2000;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class LiveJob {
  /**
   * @param {string} jobUrl   the job's API address
   * @param {object} hooks    onJob(job), onDeleted(), onState(state), finished() → bool
   */
  constructor(jobUrl, hooks) {
    this.jobUrl = jobUrl;
    this.hooks = hooks;
    this.stream = null;
    this.pollTimer = null;
    this.closed = false;
  }

  start() {
    if (this.closed || this.stream || this.pollTimer) return;
    this.hooks.onState("connecting");
    this.stream = getToken() ? this.fetchStream() : this.eventSourceStream();
  }

  stop() {
    if (this.stream) { this.stream.close(); this.stream = null; }
    clearTimeout(this.pollTimer);
    this.pollTimer = null;
  }

  close() {
    this.closed = true;
    this.stop();
  }

  onJobEvent(data) {
    this.hooks.onState("live");
    let job;
    try { job = JSON.parse(data); } catch (_) { return; /* a malformed event: wait for the next */ }
    this.hooks.onJob(job);
  }

  eventSourceStream() {
    const source = new EventSource(`${this.jobUrl}/watch`);
    source.addEventListener("job", (e) => this.onJobEvent(e.data));
    source.addEventListener("deleted", () => this.hooks.onDeleted());
    source.onopen = () => this.hooks.onState("live");
    source.onerror = () => {
      if (this.closed) return;
      if (source.readyState === EventSource.CLOSED) {
        source.close();
        if (this.stream && this.stream.source === source) this.stream = null;
        if (this.hooks.finished()) return;
        this.startPolling();
      } else {
        this.hooks.onState("reconnecting");
      }
    };
    return { source, close: () => source.close() };
  }

  fetchStream() {
    const controller = new AbortController();
    (async () => {
      let failures = 0;
      while (!controller.signal.aborted && !this.closed) {
        try {
          const resp = await fetch(`${this.jobUrl}/watch`, {
            cache: "no-store", signal: controller.signal,
            headers: { Accept: "text/event-stream", ...authHeaders() } });
          if (resp.status === 401) {
            const p = await readProblem(resp);
            showAuth(p.detail);
            return;
          }
          if (!resp.ok || !resp.body) throw new Error(`HTTP ${resp.status}`);
          failures = 0;
          this.hooks.onState("live");
          if (await this.readEvents(resp.body) === "deleted") return;
        } catch (err) {
          if (controller.signal.aborted || this.closed) return;
          failures += 1;
        }
        if (this.hooks.finished()) return;
        if (failures >= 5) { this.stream = null; this.startPolling(); return; }
        this.hooks.onState("reconnecting");
        await sleep(1000 * Math.min(failures + 1, 5));
      }
    })();
    return { close: () => controller.abort() };
  }

  /** Parse a text/event-stream body until it ends; "deleted" when the job was deleted. */
  async readEvents(body) {
    const reader = body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return "ended";
      buffer = (buffer + value).replace(/\r\n?/g, "\n");
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        let name = "message";
        const data = [];
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const val = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "event") name = val;
          else if (field === "data") data.push(val);
        }
        if (name === "job") this.onJobEvent(data.join("\n"));
        else if (name === "deleted") { this.hooks.onDeleted(); return "deleted"; }
      }
    }
  }

  startPolling() {
    this.hooks.onState("polling");
    const tick = async () => {
      this.pollTimer = null;
      if (this.closed) return;
      try { this.hooks.onJob(await api(this.jobUrl)); } catch (err) { if (err.status === 401) return; }
      if (!this.closed && !this.hooks.finished() && !this.stream) {
        this.pollTimer = setTimeout(tick, POLL_MS);
      }
    };
    this.pollTimer = setTimeout(tick, POLL_MS);
  }
}
