// The pool view: per GPU pool, the running and queued jobs of each team and their usage
// against quota (`GET /v1/pools`). A server without pool views answers 404: say so.

import { api } from "./api.js";
import { h, num } from "./format.js";

const REFRESH_MS = 5000;

function cell(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") return num(value);
  if (Array.isArray(value)) return value.map(cell).join(", ");
  if (typeof value === "object") {
    // {used, limit} style pairs read as "used / limit"; anything else as key: value.
    const used = value.used ?? value.usage;
    const limit = value.limit ?? value.quota;
    if (used !== undefined && limit !== undefined) return `${cell(used)} / ${cell(limit)}`;
    return Object.entries(value).map(([k, v]) => `${k}: ${cell(v)}`).join(", ");
  }
  return String(value);
}

// A table of rows whose columns are the union of their keys, in first-seen order.
function table(label, rows) {
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  return h(
    "table",
    {},
    h("caption", { text: label }),
    h("thead", {}, h("tr", {}, keys.map((k) => h("th", { scope: "col", text: k.replaceAll("_", " ") })))),
    h("tbody", {}, rows.map((r) => h("tr", {}, keys.map((k) => h("td", { text: cell(r[k]) }))))),
  );
}

function renderPool(pool) {
  const nested = Object.entries(pool).filter(([, v]) => Array.isArray(v) && v.every((x) => x && typeof x === "object"));
  const scalars = Object.entries(pool).filter(([k, v]) => k !== "object" && !nested.some(([n]) => n === k) && v !== null && typeof v !== "object");
  return h(
    "section",
    { class: "pool", "aria-label": `Pool ${pool.name ?? pool.id ?? ""}` },
    h("h2", { text: `Pool ${pool.name ?? pool.id ?? ""}` }),
    h("dl", { class: "summary" }, scalars.flatMap(([k, v]) => [h("dt", { text: k.replaceAll("_", " ") }), h("dd", { text: cell(v) })])),
    nested.map(([k, rows]) => (rows.length ? table(k.replaceAll("_", " "), rows) : h("p", { class: "muted", text: `No ${k.replaceAll("_", " ")}.` }))),
  );
}

export function poolsView(root, signal) {
  const body = h("div", { id: "pools" });
  root.append(h("h1", { text: "Pools" }), body);
  async function load() {
    try {
      const page = await api("/pools", { signal });
      const pools = Array.isArray(page.data) ? page.data : [page];
      body.replaceChildren(...(pools.length ? pools.map(renderPool) : [h("p", { class: "muted", text: "No pools." })]));
    } catch (err) {
      if (signal.aborted) return;
      clearInterval(timer);
      const text = err.status === 404 ? "Pool views are not available on this server." : `Could not load pools: ${err.message}`;
      body.replaceChildren(h("p", { class: err.status === 404 ? "muted" : "error", role: "status", text }));
    }
  }
  const timer = setInterval(load, REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
  load();
}
