// Training curves drawn with uPlot (vendor/uPlot.iife.min.js, from the npm registry): one
// chart per group of metrics, x = step, one or more runs. Points arrive one step at a time
// from the live stream; redraws are batched to one per animation frame.

import { h, num } from "./format.js";

// Each chart: its title and the metrics it plots (name in the per-step metrics, legend label).
export const CHARTS = [
  { id: "reward", title: "Reward", metrics: [["reward_mean", "mean"], ["reward_std", "std"]] },
  { id: "loss", title: "Loss", metrics: [["loss", "loss"]] },
  { id: "kl", title: "KL", metrics: [["kl_old", "to old policy"], ["kl_init", "to initial policy"]] },
  { id: "entropy", title: "Entropy", metrics: [["entropy", "entropy"]] },
  {
    id: "grad_norm",
    title: "Grad norm",
    metrics: [["grad_norm", "total"], ["grad_norm_pos", "A > 0"], ["grad_norm_neg", "A < 0"]],
  },
  {
    id: "response_len",
    title: "Response length (tokens)",
    metrics: [["response_len_mean", "mean"], ["response_len_max", "max"]],
  },
  {
    id: "tokens_per_sec",
    title: "Tokens/s",
    metrics: [["tokens_per_sec", "whole step"], ["rollout_tokens_per_sec", "rollout"]],
  },
];

// Steps are whole numbers: tick at these spacings only.
const STEP_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];

// uPlot's default y range for a flat series is 0..100; pad around the value instead.
function flatSafeRange(u, min, max) {
  if (min === null || max === null) return [0, 1];
  if (min === max) {
    const pad = Math.abs(min) > 0 ? Math.abs(min) * 0.1 : 1;
    return [min - pad, max + pad];
  }
  return window.uPlot.rangeNum(min, max, 0.1, true);
}

// Line colours with at least 3:1 contrast on white (WCAG non-text contrast).
const COLORS = ["#0a4fbf", "#b3261e", "#146c2e", "#7a4d00", "#6b2fa0", "#00677f"];

// The points of one run: step -> metrics. A step at or below the last one means the run
// resumed from an earlier checkpoint: the later points are dropped, as the server does.
export class Series {
  constructor(label) {
    this.label = label;
    this.points = new Map();
    this.last = -1;
  }
  add(step, metrics) {
    if (step <= this.last) {
      for (const s of [...this.points.keys()]) if (s >= step) this.points.delete(s);
    }
    this.points.set(step, metrics);
    this.last = step;
  }
  clear() {
    this.points.clear();
    this.last = -1;
  }
}

// A grid of charts over one or more runs (`runs`: Series). With several runs each chart
// plots only its first metric per run, labelled by the run, so they compare at a glance.
export class ChartGrid {
  constructor(container, runs) {
    this.runs = runs;
    this.compare = runs.length > 1;
    this.figures = CHARTS.map((chart) => {
      const empty = h("p", { class: "empty", text: "No points yet" });
      const latest = h("span", { class: "latest" });
      const figure = h(
        "figure",
        { class: "chart", "data-chart": chart.id, "data-points": "0" },
        h("figcaption", {}, h("span", { text: chart.title }), latest),
        empty,
      );
      container.append(figure);
      return { chart, figure, empty, latest, plot: null };
    });
    this.pending = false;
    this.resize = () => this.figures.forEach((f) => f.plot?.setSize(this.size(f.figure)));
    window.addEventListener("resize", this.resize);
  }

  size(figure) {
    return { width: Math.max(280, figure.clientWidth - 20), height: 220 };
  }

  // [[label, metric, runIndex, metricIndex]] drawn by one chart.
  lines(chart) {
    const metrics = this.compare ? chart.metrics.slice(0, 1) : chart.metrics;
    return this.runs.flatMap((run, r) =>
      metrics.map(([name, label], m) => [this.compare ? run.label : label, name, r, m]),
    );
  }

  update() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.figures.forEach((f) => this.draw(f));
    });
  }

  draw(f) {
    const lines = this.lines(f.chart);
    const steps = new Set();
    for (const run of this.runs) {
      for (const [step, m] of run.points) {
        if (lines.some(([, name]) => typeof m[name] === "number")) steps.add(step);
      }
    }
    const xs = [...steps].sort((a, b) => a - b);
    f.figure.dataset.points = String(xs.length);
    f.figure.dataset.runsWithPoints = String(
      this.runs.filter((run) => [...run.points.values()].some((m) => lines.some(([, name]) => typeof m[name] === "number"))).length,
    );
    if (!xs.length) return;
    f.latest.textContent = this.latestText(lines, xs);
    const data = [
      xs,
      ...lines.map(([, name, r]) =>
        xs.map((s) => {
          const v = this.runs[r].points.get(s)?.[name];
          return typeof v === "number" ? v : null;
        }),
      ),
    ];
    if (!f.plot) {
      f.empty.remove();
      const opts = {
        ...this.size(f.figure),
        scales: { x: { time: false }, y: { range: flatSafeRange } },
        legend: { live: false }, // the caption shows the newest values
        axes: [
          { label: "step", stroke: "#1b1f24", grid: { stroke: "#e3e7eb" }, incrs: STEP_INCRS },
          {
            stroke: "#1b1f24",
            grid: { stroke: "#e3e7eb" },
            size: 60,
            // Three significant digits: tiny values read as 1.5e-9, not as a column of "-0".
            values: (u, splits) => splits.map((v) => num(v, 3)),
          },
        ],
        series: [
          { label: "step" },
          ...lines.map(([label, , r, m]) => ({
            label,
            stroke: COLORS[this.compare ? r : m],
            width: 2,
            spanGaps: true,
            // Dots while a line has too few points to be seen as one.
            points: { show: (u, i) => u.data[i].filter((v) => v !== null).length < 3 },
          })),
        ],
      };
      f.plot = new window.uPlot(opts, data, f.figure);
    } else {
      f.plot.setData(data);
    }
  }

  // "mean 0.41 · std 0.2 at step 12": the newest values, readable without hovering.
  latestText(lines, xs) {
    const parts = lines.map(([label, name, r]) => {
      const run = this.runs[r];
      const steps = xs.filter((s) => typeof run.points.get(s)?.[name] === "number");
      const last = steps[steps.length - 1];
      return last === undefined ? null : `${label} ${num(run.points.get(last)[name], 3)} at step ${last}`;
    });
    return parts.filter(Boolean).join(" · ");
  }

  destroy() {
    window.removeEventListener("resize", this.resize);
    this.figures.forEach((f) => f.plot?.destroy());
  }
}
