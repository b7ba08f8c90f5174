// The pool view (`GET /v1/pools`): per GPU pool, its capacity, each team's running and
// queued jobs with usage against quota, and the running and queued jobs themselves.
// A server without pool views answers 404: the view says so instead.

import { api } from "./api.js";
import { h, num, relative, time } from "./format.js";

const REFRESH_MS = 5000;

// {used, limit} -> "2 of 4" (a null limit means none).
function usedOf(value) {
  if (!value) return "–";
  return value.limit === null || value.limit === undefined
    ? `${num(value.used)} (no limit)`
    : `${num(value.used)} of ${num(value.limit)}`;
}

function jobLink(id) {
  return id ? h("a", { href: `#/jobs/${id}`, text: id }) : h("span", { class: "muted", text: "another team's job" });
}

function table(caption, headings, rows, empty) {
  if (!rows.length) return h("p", { class: "muted", text: empty });
  return h(
    "table",
    {},
    h("caption", { text: caption }),
    h("thead", {}, h("tr", {}, headings.map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((c) => h("td", {}, c))))),
  );
}

function renderPool(pool) {
  const id = `pool-${pool.name}`;
  return h(
    "section",
    { class: "pool", "aria-labelledby": id, "data-pool": pool.name },
    h("h2", { id, text: `Pool ${pool.name}` }),
    h(
      "p",
      {},
      `${pool.used_gpus} of ${pool.capacity_gpus} GPUs in use · ${pool.workers} worker(s) · ${pool.queued_jobs} queued`,
    ),
    table(
      "Teams: jobs and usage against quota",
      ["Team", "Share", "Running", "Queued", "GPUs held", "Queued jobs (quota)", "GPU-seconds (window)"],
      (pool.teams || []).map((t) => [t.team, num(t.share, 3), String(t.running_jobs), String(t.queued_jobs), usedOf(t.gpus), usedOf(t.queued_quota), num(t.gpu_seconds_window, 3)]),
      "No team has jobs here.",
    ),
    table(
      "Running",
      ["Job", "Team", "GPUs", "Priority", "Started", "Progress", "Finishes"],
      (pool.running || []).map((j) => [jobLink(j.id), j.team, String(j.gpus), j.priority, time(j.started_at), j.progress_percent === null || j.progress_percent === undefined ? "–" : `${num(j.progress_percent, 3)}%`, j.estimated_finish_at ? relative(j.estimated_finish_at) : "–"]),
      "Nothing running.",
    ),
    table(
      "Queued, in order",
      ["#", "Job", "Team", "GPUs", "Priority", "Ahead", "Starts", "Waiting for"],
      (pool.queued || []).map((j) => [String(j.position), jobLink(j.id), j.team, String(j.gpus), j.priority, String(j.ahead), j.estimated_start_at ? relative(j.estimated_start_at) : "–", (j.reason || "").replaceAll("_", " ")]),
      "Nothing queued.",
    ),
  );
}

export function poolsView(root, signal) {
  const body = h("div", { id: "pools" });
  root.append(h("h1", { text: "Pools" }), body);
  async function load() {
    try {
      const page = await api("/pools", { signal });
      body.replaceChildren(...(page.data.length ? page.data.map(renderPool) : [h("p", { class: "muted", text: "No pools." })]));
    } catch (err) {
      if (signal.aborted) return;
      if (err.status === 404) {
        clearInterval(timer); // this server has no pool views; asking again won't change that
        body.replaceChildren(h("p", { class: "muted", role: "status", text: "Pool views are not available on this server." }));
      } else {
        body.replaceChildren(h("p", { class: "error", role: "alert", text: `Could not load pools: ${err.message}` }));
      }
    }
  }
  const timer = setInterval(load, REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
  load();
}
