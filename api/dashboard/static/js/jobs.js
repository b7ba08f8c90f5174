// The jobs view: the team's jobs with status, phase, queue position/ETA and progress,
// filtered by status, method and text; refreshed every few seconds while shown.

import { api } from "./api.js";
import { algorithm, badge, h, progressCell, queueText, time } from "./format.js";

const STATUSES = ["validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"];
const REFRESH_MS = 3000;
const PAGE = 100;

function phase(job) {
  const d = job.status_details || {};
  return [d.phase, d.reason, d.message].filter(Boolean).join(" · ") || "–";
}

// A LoRA job trains an adapter on the model in the same cell (`adapter`; null for a full
// fine-tune, which gets no note).
function lora(job) {
  if (!job.adapter) return null;
  const r = job.method?.[job.method?.type]?.hyperparameters?.lora?.r;
  return h("span", { class: "muted", text: ` · LoRA adapter${r ? ` (r=${r})` : ""}` });
}

function select(id, label, options) {
  return [
    h("label", { for: id, text: label }),
    h("select", { id }, h("option", { value: "", text: "all" }), options.map((o) => h("option", { value: o, text: o }))),
  ];
}

export function jobsView(root, signal) {
  const search = h("input", { id: "filter-text", type: "search", placeholder: "id, model, suffix" });
  const error = h("p", { class: "error", role: "alert" });
  const body = h("tbody");
  const more = h("button", { type: "button", class: "secondary", hidden: true, text: "Load more" });
  const caption = h("caption", { "aria-live": "polite" });
  root.append(
    h("h1", { text: "Jobs" }),
    h(
      "form",
      { class: "filters", role: "search", "aria-label": "Filter jobs", onsubmit: (e) => e.preventDefault() },
      select("filter-status", "Status", STATUSES),
      select("filter-method", "Method", ["supervised", "reinforcement", "dpo"]),
      h("label", { for: "filter-text", text: "Search" }),
      search,
    ),
    error,
    h(
      "table",
      { id: "jobs-table" },
      caption,
      h(
        "thead",
        {},
        h(
          "tr",
          {},
          ["Job", "Model", "Method", "Status", "Phase", "Queue", "Progress", "Created"].map((t) =>
            h("th", { scope: "col", text: t }),
          ),
        ),
      ),
      body,
    ),
    more,
  );

  let jobs = [];
  let limit = PAGE;
  let hasMore = false;

  function render() {
    const status = root.querySelector("#filter-status").value;
    const method = root.querySelector("#filter-method").value;
    const text = search.value.trim().toLowerCase();
    const shown = jobs.filter(
      (j) =>
        (!status || j.status === status) &&
        (!method || j.method?.type === method) &&
        (!text || [j.id, j.model, j.user_provided_suffix, j.fine_tuned_model].some((v) => v?.toLowerCase().includes(text))),
    );
    body.replaceChildren(
      ...shown.map((j) =>
        h(
          "tr",
          { "data-job": j.id },
          h("th", { scope: "row" }, h("a", { href: `#/jobs/${j.id}`, text: j.id })),
          h("td", {}, j.model, lora(j)),
          h("td", { text: algorithm(j) }),
          h("td", {}, badge(j.status)),
          h("td", { text: phase(j) }),
          h("td", { class: "queue", text: queueText(j) }),
          h("td", {}, progressCell(j)),
          h("td", {}, time(j.created_at)),
        ),
      ),
    );
    caption.textContent = `${shown.length} of ${jobs.length} jobs shown`;
    more.hidden = !hasMore;
  }

  async function load() {
    try {
      const page = await api(`/fine_tuning/jobs?limit=${Math.min(limit, 100)}`, { signal });
      jobs = page.data;
      hasMore = page.has_more;
      error.textContent = "";
    } catch (err) {
      if (signal.aborted) return;
      error.textContent = `Could not load jobs: ${err.message}`;
    }
    render();
  }

  // Later pages, by cursor, kept until the view closes.
  async function loadMore() {
    const last = jobs[jobs.length - 1];
    if (!last) return;
    const page = await api(`/fine_tuning/jobs?limit=${PAGE}&after=${encodeURIComponent(last.id)}`, { signal });
    jobs = jobs.concat(page.data);
    hasMore = page.has_more;
    limit = jobs.length;
    render();
  }

  root.querySelectorAll("select").forEach((s) => s.addEventListener("change", render));
  search.addEventListener("input", render);
  more.addEventListener("click", () => loadMore().catch((err) => (error.textContent = err.message)));
  load();
  const timer = setInterval(() => {
    if (limit <= PAGE) load();
  }, REFRESH_MS);
  signal.addEventListener("abort", () => clearInterval(timer));
}
