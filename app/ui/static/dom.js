/* Building the page: elements from data, always as text (textContent), never as HTML. */

const SVG_NS = "http://www.w3.org/2000/svg";

export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

export function svg(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

function build(el, attrs, children) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") el.textContent = String(value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

export const $ = (sel, root = document) => root.querySelector(sel);

export function toast(message) {
  const el = $("#toast");
  el.textContent = message;
  el.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { el.hidden = true; }, 3500);
}

/** An API error as an alert: the problem's title, detail and field errors. */
export function problemAlert(heading, err, onDismiss) {
  const errors = Array.isArray(err.problem.errors) ? err.problem.errors : [];
  const status = err.status ? `${err.status} ${err.title}` : err.title;
  return h("div", { class: "alert", role: "alert" },
    h("div", { class: "alert-body" },
      h("strong", { text: heading }),
      h("p", { class: "alert-title", text: status }),
      err.detail ? h("p", { class: "alert-detail", text: err.detail }) : null,
      errors.length
        ? h("ul", {}, errors.map((e) => h("li", {
            text: e.field ? `${e.field}: ${e.message}` : String(e.message || JSON.stringify(e)),
          })))
        : null),
    onDismiss
      ? h("button", { type: "button", class: "btn btn-ghost btn-small", onclick: onDismiss,
                      "aria-label": "Dismiss this message", text: "Dismiss" })
      : null);
}
