// Training curves drawn with uPlot (vendor/uPlot.iife.min.js, from the npm registry): one
// chart per group of metrics, x = step, one or more runs. Points arrive one step at a time
// from the live stream; redraws are batched to one per animation frame.

import { h } from "./format.js";

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
    metrics: [["tokens_per_sec", "step"], ["rollout_tokens_per_sec", "rollout"]],
  },
];

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
// plots only its first metric per run, so runs stay comparable at a glance.
export class ChartGrid {
  constructor(container, runs) {
    this.runs = runs;
    this.compare = runs.length > 1;
    this.figures = CHARTS.map((chart) => {
      const empty = h("p", { class: "empty", text: "No points yet" });
      const figure = h(
        "figure",
        { class: "chart", "data-chart": chart.id, "data-points": "0" },
        h("figcaption", { text: chart.title }),
        empty,
      );
      container.append(figure);
      return { chart, figure, empty, plot: null };
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
      metrics.map(([name, label], m) => [this.compare ? `${run.label}` : label, name, r, m]),
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
    if (!xs.length) return;
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
        scales: { x: { time: false } },
        axes: [
          { label: "step", stroke: "#1b1f24", grid: { stroke: "#e3e7eb" } },
          { stroke: "#1b1f24", grid: { stroke: "#e3e7eb" }, size: 60 },
        ],
        series: [
          { label: "step" },
          ...lines.map(([label, , r, m]) => ({
            label,
            stroke: COLORS[this.compare ? r : m],
            width: 2,
            spanGaps: true,
            points: { show: xs.length < 3 },
          })),
        ],
      };
      f.plot = new window.uPlot(opts, data, f.figure);
    } else {
      f.plot.setData(data);
    }
  }

  destroy() {
    window.removeEventListener("resize", this.resize);
    this.figures.forEach((f) => f.plot?.destroy());
  }
}
