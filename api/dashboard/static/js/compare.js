// Side-by-side curves of two jobs (e.g. LCO vs GRPO on the same data), both live.

import { api, watchJob } from "./api.js";
import { ChartGrid, Series } from "./charts.js";
import { algorithm, h } from "./format.js";

export function compareView(root, signal, params) {
  const error = h("p", { class: "error", role: "alert" });
  const pickers = ["a", "b"].map((side) => h("select", { id: `compare-${side}` }));
  const form = h(
    "form",
    { class: "filters", "aria-label": "Jobs to compare" },
    h("label", { for: "compare-a", text: "Job A" }),
    pickers[0],
    h("label", { for: "compare-b", text: "Job B" }),
    pickers[1],
    h("button", { type: "submit", text: "Compare" }),
  );
  const charts = h("div", { class: "charts", id: "compare-charts" });
  root.append(h("h1", { text: "Compare jobs" }), form, error, charts);

  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const [a, b] = pickers.map((p) => p.value);
    location.hash = `#/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`;
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
  charts.before(h("ul", { class: "runs", "aria-label": "Compared jobs" }, names));
  const runs = ids.map((_, i) => new Series("AB"[i]));
  const grid = new ChartGrid(charts, runs);
  signal.addEventListener("abort", () => grid.destroy());
  ids.forEach((id, i) =>
    watchJob(id, {
      signal,
      onConnect: () => runs[i].clear(),
      onMessage(type, data) {
        if (type === "job") {
          names[i].replaceChildren(`${"AB"[i]}: `, h("a", { href: `#/jobs/${id}`, text: id }), ` · ${algorithm(data)} · ${data.status}`);
        } else if (type === "metrics") {
          runs[i].add(data.step, data.metrics);
          grid.update();
        }
      },
      onError: (err) => (error.textContent = `${id}: ${err.message}`),
    }),
  );
}
