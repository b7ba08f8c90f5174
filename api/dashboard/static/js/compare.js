// Two jobs' curves (e.g. LCO vs GRPO on the same data), both live: overlaid on the same
// axes (each chart's main metric per job), or side by side (every metric, one column each).

import { api, watchJob } from "./api.js";
import { ChartGrid, Series, evaluation } from "./charts.js";
import { algorithm, h } from "./format.js";

export function compareView(root, signal, params) {
  const error = h("p", { class: "error", role: "alert" });
  const side = params.get("layout") === "side";
  const pickers = ["a", "b"].map((name) => h("select", { id: `compare-${name}` }));
  const form = h(
    "form",
    { class: "filters", "aria-label": "Jobs to compare" },
    h("label", { for: "compare-a", text: "Job A" }),
    pickers[0],
    h("label", { for: "compare-b", text: "Job B" }),
    pickers[1],
    h("label", { for: "compare-layout", text: "Layout" }),
    h(
      "select",
      { id: "compare-layout" },
      h("option", { value: "overlay", text: "overlaid, same axes", selected: !side }),
      h("option", { value: "side", text: "side by side", selected: side }),
    ),
    h("button", { type: "submit", text: "Compare" }),
  );
  const charts = h("div", { class: "charts", id: "compare-charts" });
  root.append(h("h1", { text: "Compare jobs" }), form, error, charts);

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const query = new URLSearchParams({
      a: pickers[0].value,
      b: pickers[1].value,
      layout: form.querySelector("#compare-layout").value,
    });
    location.hash = `#/compare?${query}`;
  });

  api("/fine_tuning/jobs?limit=100", { signal })
    .then((page) => {
      pickers.forEach((picker, i) => {
        const chosen = params.get(i ? "b" : "a");
        picker.replaceChildren(
          h("option", { value: "", text: "choose a job" }),
          ...page.data.map((j) => h("option", { value: j.id, text: `${j.id} · ${algorithm(j)} · ${j.status}`, selected: j.id === chosen })),
        );
      });
    })
    .catch((err) => !signal.aborted && (error.textContent = `Could not load jobs: ${err.message}`));

  const ids = [params.get("a"), params.get("b")].filter(Boolean);
  if (ids.length < 2) {
    charts.append(h("p", { class: "muted", text: "Choose two jobs to compare their curves." }));
    return;
  }
  const names = ids.map((id, i) => h("li", { text: `${"AB"[i]}: ${id}` }));
  charts.before(h("ul", { class: side ? "runs" : "runs overlay", "aria-label": "Compared jobs" }, names));
  const runs = ids.map((_, i) => new Series("AB"[i]));
  let grids;
  if (side) {
    charts.className = "side-by-side";
    grids = runs.map((run, i) => {
      const column = h("div", { class: "charts", "data-run": "AB"[i] });
      charts.append(h("section", { "aria-label": `Job ${"AB"[i]}` }, h("h2", { text: `${"AB"[i]}: ${ids[i]}` }), column));
      return new ChartGrid(column, [run]);
    });
  } else {
    grids = [new ChartGrid(charts, runs)];
  }
  signal.addEventListener("abort", () => grids.forEach((g) => g.destroy()));
  ids.forEach((id, i) =>
    watchJob(id, {
      signal,
      onConnect: () => runs[i].clear(),
      onMessage(type, data) {
        if (type === "job") {
          names[i].replaceChildren(`${"AB"[i]}: `, h("a", { href: `#/jobs/${id}`, text: id }), ` · ${algorithm(data)} · ${data.status}`);
        } else if (type === "metrics") {
          runs[i].add(data.step, data.metrics);
          grids.forEach((g) => g.update());
        } else if (type === "event") {
          const values = evaluation(data);
          if (values && runs[i].merge(data.data.step, values)) grids.forEach((g) => g.update());
        }
      },
      onError: (err) => (error.textContent = `${id}: ${err.message}`),
    }),
  );
}
