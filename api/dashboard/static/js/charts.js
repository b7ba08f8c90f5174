// Training curves drawn with uPlot (vendor/uPlot.iife.min.js, from the npm registry): one
// chart per group of metrics, x = step, one or more runs. Points arrive one step at a time
// from the live stream; redraws are batched to one per animation frame.

import { h, num } from "./format.js";

// Each chart: its title and the metrics it plots (name in the per-step metrics, legend label).
// A chart shows only once it has points, with a line per metric that has some, so a job
// gets the charts of what it reports: RL jobs reward, KL, response length and the rest;
// SFT jobs training and validation loss, grad norm, entropy, learning rate, tokens.
export const CHARTS = [
  {
    id: "reward",
    title: "Reward",
    metrics: [["reward_mean", "mean"], ["reward_std", "std"], ["eval_reward", "eval (greedy)"]],
  },
  { id: "loss", title: "Loss", metrics: [["loss", "training"], ["eval_loss", "validation"]] },
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
  { id: "lr", title: "Learning rate", metrics: [["lr", "lr"]] },
  { id: "trained_tokens", title: "Tokens trained", metrics: [["trained_tokens", "total"]] },
];

// Evaluations (eval_*) run every eval_interval steps: dashed lines with a dot per point.
const isEval = (name) => name.startsWith("eval_");

// The evaluation results an event carries (`{"step", "eval_loss" | "eval_reward", ...}`),
// or null. The evaluation before training (step 0) is reported only this way.
export function evaluation(event) {
  const data = event.data || {};
  if (!Number.isInteger(data.step)) return null;
  const values = Object.entries(data).filter(([k, v]) => isEval(k) && typeof v === "number");
  return values.length ? Object.fromEntries(values) : null;
}

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
  // Values reported by an event (`evaluation`) fill what the step's own metrics lack. A step
  // not reached yet is skipped: its metrics will carry them, or the event came from an
  // attempt that a resume rolled back. Returns whether anything was added.
  merge(step, values) {
    if (step > Math.max(this.last, 0)) return false;
    this.points.set(step, { ...values, ...this.points.get(step) });
    return true;
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
    this.empty = h("p", { class: "muted", text: "No points yet: the curves appear with the first step." });
    container.append(this.empty);
    this.figures = CHARTS.map((chart) => {
      const latest = h("span", { class: "latest" });
      const figure = h(
        "figure",
        { class: "chart", "data-chart": chart.id, "data-points": "0", "data-metrics": "", hidden: true },
        h("figcaption", {}, h("span", { text: chart.title }), latest),
      );
      container.append(figure);
      return { chart, figure, latest, plot: null, drawn: "" };
    });
    this.pending = false;
    this.resize = () => this.figures.forEach((f) => f.plot?.setSize(this.size(f.figure)));
    window.addEventListener("resize", this.resize);
  }

  size(figure) {
    return { width: Math.max(280, figure.clientWidth - 20), height: 220 };
  }

  // [[label, metric, runIndex, metricIndex]] drawn by one chart: its metrics that some run
  // has a point of (metricIndex keeps each metric's colour whatever else is present).
  lines(chart) {
    const metrics = this.compare ? chart.metrics.slice(0, 1) : chart.metrics;
    return this.runs.flatMap((run, r) =>
      metrics
        .map(([name, label], m) => [this.compare ? run.label : label, name, r, m])
        .filter(([, name]) => [...run.points.values()].some((p) => typeof p[name] === "number")),
    );
  }

  update() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      this.figures.forEach((f) => this.draw(f));
      this.empty.hidden = this.figures.some((f) => !f.figure.hidden);
    });
  }

  draw(f) {
    const lines = this.lines(f.chart);
    const steps = new Set();
    for (const [, name, r] of lines) {
      for (const [step, m] of this.runs[r].points) if (typeof m[name] === "number") steps.add(step);
    }
    const xs = [...steps].sort((a, b) => a - b);
    f.figure.dataset.points = String(xs.length);
    f.figure.dataset.metrics = [...new Set(lines.map(([, name]) => name))].join(" ");
    f.figure.dataset.runsWithPoints = String(new Set(lines.map(([, , r]) => r)).size);
    f.figure.hidden = !xs.length;
    // A new set of lines (a metric's first point, or a restart) needs a new plot.
    const drawn = lines.map(([, name, r]) => `${r}:${name}`).join(" ");
    if (f.plot && f.drawn !== drawn) {
      f.plot.destroy();
      f.plot = null;
    }
    f.drawn = drawn;
    if (!xs.length) {
      f.latest.textContent = "";
      return;
    }
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
    if (f.plot) {
      f.plot.setData(data);
      return;
    }
    const opts = {
      ...this.size(f.figure),
      scales: { x: { time: false }, y: { range: flatSafeRange } },
      legend: { live: false }, // the caption shows the newest values
      axes: [
        { label: "step", stroke: "#1b1f24", grid: { stroke: "#e3e7eb" }, incrs: STEP_INCRS },
        {
          stroke: "#1b1f24",
          grid: { stroke: "#e3e7eb" },
          // Wide enough for the longest label (a learning rate reads 0.00105).
          size: (u, values) => Math.max(50, 16 + 7 * Math.max(0, ...(values || []).map((v) => v.length))),
          // Three significant digits: tiny values read as 1.5e-9, not as a column of "-0".
          values: (u, splits) => splits.map((v) => num(v, 3)),
        },
      ],
      series: [
        { label: "step" },
        ...lines.map(([label, name, r, m]) => ({
          label,
          stroke: COLORS[this.compare ? r : m],
          width: 2,
          dash: isEval(name) ? [6, 4] : undefined,
          spanGaps: true,
          // Dots while a line has too few points to be seen as one, and on every evaluation.
          points: { show: (u, i) => isEval(name) || u.data[i].filter((v) => v !== null).length < 3 },
        })),
      ],
    };
    f.plot = new window.uPlot(opts, data, f.figure);
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
