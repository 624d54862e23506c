/* The job state machine as an SVG figure, drawn from the machine as the API serves it
 * (GET /v1/fsm: states, initial state, transitions): the main flow in a row (a column on a
 * narrow screen), the states every step can fall to below it, and retry back into the flow. */

import { svg } from "./dom.js";
import { STOPPED, doneStates, statusClass } from "./jobs.js";

/** The main flow from the initial state, and the states off it (Failed, Cancelled). */
export function layoutMachine(machine) {
  const states = machine.states || [];
  const edges = (machine.transitions || [])
    .filter((t) => t.source !== t.target)
    .map((t) => ({ from: t.source, to: t.target, label: t.event }));
  const incoming = new Map();
  for (const e of edges) incoming.set(e.to, (incoming.get(e.to) || 0) + 1);
  // follow the least-entered successor: the stage after a stage, not the fall to Failed
  const chain = [machine.initial || states[0]];
  for (;;) {
    const here = chain[chain.length - 1];
    const next = edges.filter((e) => e.from === here && !chain.includes(e.to))
      .sort((a, b) => incoming.get(a.to) - incoming.get(b.to))[0];
    if (!next) break;
    chain.push(next.to);
  }
  const branch = states.filter((s) => !chain.includes(s));
  return { chain, branch, edges };
}

export function renderDiagram(machine, job, vertical = false) {
  const { chain, branch, edges } = layoutMachine(machine);
  const current = job && job.status;
  const done = doneStates(job);
  const W = vertical ? 136 : 116, H = vertical ? 38 : 44;
  const M = 12;
  // where each chain box sits, and the geometry of the fail/cancel "bus"
  const G = vertical
    ? (() => {
        const gap = 16;
        const at = (i) => ({ x: M, y: M + i * (H + gap) });
        const busX = M + W + 28;
        return { at, busX, branchX: busX + 56,
                 width: busX + 56 + W + M, chainEnd: M + chain.length * (H + gap) - gap };
      })()
    : (() => {
        const gap = 26;
        const at = (i) => ({ x: M + i * (W + gap), y: 18 });
        const busY = 18 + H + 34;
        return { at, busY, branchY: busY + 52,
                 width: M * 2 + chain.length * W + (chain.length - 1) * gap };
      })();
  const mid = (i) => ({ x: G.at(i).x + W / 2, y: G.at(i).y + H / 2 });

  const box = (name, x, y, extra) => {
    const classes = ["st", extra];
    if (name === current) classes.push("st-current", `st-current-${statusClass(name)}`);
    else if (done.has(name)) classes.push("st-done");
    if (name === current && job && job.suspend && !STOPPED.has(name)) classes.push("st-paused");
    return svg("g", { class: classes.filter(Boolean).join(" "), dataset: { state: name } },
      svg("title", {}, name === current ? `${name} (current)` : name),
      svg("rect", { x, y, width: W, height: H, rx: 10 }),
      svg("text", { x: x + W / 2, y: y + H / 2 + 1, "text-anchor": "middle",
                    "dominant-baseline": "middle" }, name));
  };
  const line = (x1, y1, x2, y2, cls, arrow, title) => svg("line", {
    x1, y1, x2, y2, class: cls, "marker-end": arrow ? "url(#fsm-arrow)" : null },
    title ? svg("title", {}, title) : null);
  const label = (x, y, text, anchor = "start") => svg("text", {
    x, y, class: "edge-label", "dominant-baseline": "middle", "text-anchor": anchor }, text);

  const parts = [
    svg("defs", {},
      svg("marker", { id: "fsm-arrow", viewBox: "0 0 10 10", refX: 9, refY: 5,
                      markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
        svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }))),
  ];
  // the main flow
  for (let i = 1; i < chain.length; i++) {
    const how = (edges.find((e) => e.from === chain[i - 1] && e.to === chain[i]) || {}).label;
    const title = `${chain[i - 1]} → ${chain[i]}${how ? ` (${how})` : ""}`;
    const a = G.at(i - 1), b = G.at(i);
    parts.push(vertical
      ? line(a.x + W / 2, a.y + H, b.x + W / 2, b.y - 1, "edge", true, title)
      : line(a.x + W, a.y + H / 2, b.x - 1, b.y + H / 2, "edge", true, title));
  }
  // fail / cancel from every state that can, through one bus line
  const sources = chain.map((name, i) => ({ name, i }))
    .filter(({ name }) => edges.some((e) => e.from === name && branch.includes(e.to)));
  let bottom = vertical ? G.chainEnd : 18 + H;
  if (branch.length && sources.length) {
    const first = mid(sources[0].i), last = mid(sources[sources.length - 1].i);
    for (const { i } of sources) {
      const c = mid(i);
      parts.push(vertical ? line(c.x + W / 2, c.y, G.busX, c.y, "edge edge-soft")
                          : line(c.x, c.y + H / 2, c.x, G.busY, "edge edge-soft"));
    }
    parts.push(vertical ? line(G.busX, first.y, G.busX, last.y, "edge edge-soft")
                        : line(first.x, G.busY, last.x, G.busY, "edge edge-soft"));
    const from = vertical ? first.y : first.x, span = (vertical ? last.y : last.x) - from;
    let lastBox = null;
    branch.forEach((name, k) => {
      const along = from + (span * (k + 1)) / (branch.length + 1);
      const how = [...new Set(edges.filter((e) => e.to === name && chain.includes(e.from))
        .map((e) => e.label))].join(", ");
      if (vertical) {
        parts.push(line(G.busX, along, G.branchX - 1, along, "edge edge-soft", true));
        if (how) parts.push(label(G.busX + 8, along - 9, how));
        parts.push(box(name, G.branchX, along - H / 2, "st-branch"));
        lastBox = { x: G.branchX, y: along - H / 2 };
      } else {
        parts.push(line(along, G.busY, along, G.branchY - 1, "edge edge-soft", true));
        if (how) parts.push(label(along + 8, (G.busY + G.branchY) / 2 + 1, how));
        parts.push(box(name, along - W / 2, G.branchY, "st-branch"));
        lastBox = { x: along - W / 2, y: G.branchY };
      }
    });
    bottom = Math.max(bottom, lastBox.y + H);
    if (edges.some((e) => branch.includes(e.from) && chain.includes(e.to))) {
      const text = "Retry: back to the stage that did not finish";
      if (vertical) {
        const x = G.busX + 8, y = lastBox.y + H + 24;
        parts.push(svg("path", { d: `M ${x} ${y} h 28`, class: "edge edge-retry",
                                 "marker-end": "url(#fsm-arrow)" }));
        parts.push(label(x + 36, y, "Retry: back to the"));
        parts.push(label(x, y + 17, "stage that did not finish"));
        bottom = Math.max(bottom, y + 24);
      } else {
        const x = lastBox.x + W + 24, y = lastBox.y + H / 2;
        parts.push(svg("path", { d: `M ${x} ${y} h 34`, class: "edge edge-retry",
                                 "marker-end": "url(#fsm-arrow)" }));
        parts.push(label(x + 42, y + 1, text));
      }
    }
  }
  chain.forEach((name, i) => parts.push(box(name, G.at(i).x, G.at(i).y, "st-flow")));

  return svg("svg", { viewBox: `0 0 ${G.width} ${bottom + M + 6}`,
                      class: vertical ? "fsm fsm-vertical" : "fsm", role: "img",
                      "aria-label": `Job state machine; current state ${current || "unknown"}`,
                      dataset: { current: current || "" }, preserveAspectRatio: "xMinYMin meet" },
    parts);
}
