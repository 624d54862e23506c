/* Numbers, durations and times as a person reads them. */

import { h } from "./dom.js";

export const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : null);
export const clamp = (v) => Math.max(0, Math.min(100, num(v) ?? 0));
export const intFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });
const decFmt = new Intl.NumberFormat(undefined, { maximumFractionDigits: 2 });
const fixed2 = new Intl.NumberFormat(undefined, { minimumFractionDigits: 2,
                                                   maximumFractionDigits: 2 });
const small = new Intl.NumberFormat(undefined, { maximumSignificantDigits: 3 });

export function fmtInt(v) {
  return num(v) === null ? "—" : intFmt.format(v);
}

export function fmtNumber(v) {
  if (num(v) === null) return v === null || v === undefined ? "—" : String(v);
  return Number.isInteger(v) ? intFmt.format(v) : decFmt.format(v);
}

/** One formatter for a whole column, so decimals line up: integers, else two decimals. */
export function columnFormat(values) {
  const nums = values.filter((v) => num(v) !== null);
  if (!nums.length || nums.length !== values.filter((v) => v !== null).length) return fmtNumber;
  if (nums.every(Number.isInteger)) return fmtInt;
  const tiny = nums.every((v) => Math.abs(v) < 0.01);
  return (v) => (num(v) === null ? "—" : (tiny ? small : fixed2).format(v));
}

export function fmtSeconds(v) {
  if (num(v) === null) return "—";
  if (v < 10) return `${v.toFixed(2)} s`;
  if (v < 90) return `${v.toFixed(1)} s`;
  return fmtDuration(v * 1000);
}

export function fmtDuration(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

export function ago(iso) {
  if (!iso) return "—";
  const diff = Date.now() - new Date(iso).getTime();
  if (diff < 5000) return "just now";
  if (diff < 60000) return `${Math.round(diff / 1000)} s ago`;
  if (diff < 3600000) return `${Math.round(diff / 60000)} min ago`;
  if (diff < 86400000) return `${Math.round(diff / 3600000)} h ago`;
  return new Date(iso).toLocaleDateString();
}

export function timeEl(iso, relative = true) {
  if (!iso) return h("span", { class: "muted", text: "—" });
  const abs = new Date(iso).toLocaleString();
  return h("time", { datetime: iso, title: abs, text: relative ? ago(iso) : abs });
}
