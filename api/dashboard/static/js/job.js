// The job view: status and controls, live curves, rollout samples per step, checkpoints
// with downloads, and the event log, all fed by the job's live stream (no reloading).

import { api, downloadCheckpoint, watchJob } from "./api.js";
import { ChartGrid, Series } from "./charts.js";
import { algorithm, badge, h, num, progressCell, queueText, relative, time } from "./format.js";

const ACTIVE = ["validating_files", "queued", "running", "paused"];
const MAX_EVENTS = 500;

function announce(text) {
  document.getElementById("announce").textContent = text;
}

export function jobView(root, signal, jobId) {
  const title = h("h1", { text: jobId });
  const status = h("span", { id: "job-status" });
  const error = h("p", { class: "error", role: "alert" });
  const buttons = {
    cancel: h("button", { type: "button", class: "danger", text: "Cancel", disabled: true }),
    pause: h("button", { type: "button", class: "secondary", text: "Pause", disabled: true }),
    resume: h("button", { type: "button", text: "Resume", disabled: true }),
  };
  const summary = h("dl", { class: "summary" });
  const charts = h("div", { class: "charts", id: "charts" });
  const stepSelect = h("select", { id: "sample-step" });
  const samplesBody = h("tbody");
  const ckptBody = h("tbody");
  const events = h("ol", { class: "events", id: "events", "aria-label": "Event log, newest first" });

  root.append(
    h(
      "div",
      { class: "job-head" },
      title,
      status,
      h("div", { class: "actions", role: "group", "aria-label": "Job controls" }, Object.values(buttons)),
      h("a", { href: `#/compare?a=${encodeURIComponent(jobId)}`, text: "Compare with another job" }),
    ),
    error,
    summary,
    h("section", { "aria-labelledby": "curves-title" }, h("h2", { id: "curves-title", text: "Training curves" }), charts),
    h(
      "div",
      { class: "two-col" },
      h(
        "section",
        { "aria-labelledby": "samples-title" },
        h("h2", { id: "samples-title", text: "Sample rollouts" }),
        h("p", { class: "filters" }, h("label", { for: "sample-step", text: "Step" }), stepSelect),
        h(
          "table",
          { id: "samples" },
          h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Prompt" }), h("th", { scope: "col", text: "Completion" }), h("th", { scope: "col", class: "num", text: "Reward" }))),
          samplesBody,
        ),
      ),
      h(
        "section",
        { "aria-labelledby": "ckpt-title" },
        h("h2", { id: "ckpt-title", text: "Checkpoints" }),
        h(
          "table",
          { id: "checkpoints" },
          h("thead", {}, h("tr", {}, ["Step", "Checkpoint", "Created", "Download"].map((t) => h("th", { scope: "col", text: t })))),
          ckptBody,
        ),
      ),
    ),
    h("section", { "aria-labelledby": "events-title" }, h("h2", { id: "events-title", text: "Event log" }), events),
  );

  const series = new Series(jobId);
  const grid = new ChartGrid(charts, [series]);
  signal.addEventListener("abort", () => grid.destroy());
  let samples = new Map(); // step -> samples
  let follow = true; // show the newest step's samples until the user picks one

  function renderJob(job) {
    status.replaceChildren(badge(job.status));
    const d = job.status_details || {};
    const rows = [
      ["Status", badge(job.status)],
      ["Phase", [d.phase, d.reason].filter(Boolean).join(" · ") || "–", d.since ? ` (since ${relative(d.since)})` : ""],
      ["Queue", queueText(job)],
      ["Progress", progressCell(job)],
      ["Model", job.model],
      ["Method", algorithm(job)],
      ["Fine-tuned model", job.fine_tuned_model || "–"],
      ["Attempts", String(job.attempts ?? "–")],
      ["Created", time(job.created_at)],
      ["Finished", time(job.finished_at)],
    ];
    if (job.error) rows.push(["Error", `${job.error.code}: ${job.error.message}`]);
    summary.replaceChildren(...rows.flatMap(([k, ...v]) => [h("dt", { text: k }), h("dd", {}, ...v)]));
    buttons.cancel.disabled = !ACTIVE.includes(job.status);
    buttons.pause.disabled = !["queued", "running"].includes(job.status);
    buttons.resume.disabled = job.status !== "paused";
  }

  function renderSamples() {
    const steps = [...samples.keys()].sort((a, b) => b - a);
    const chosen = follow ? steps[0] : Number(stepSelect.value);
    stepSelect.replaceChildren(...steps.map((s) => h("option", { value: s, text: `step ${s}`, selected: s === chosen })));
    const rows = samples.get(chosen) || [];
    samplesBody.replaceChildren(
      ...rows.map((s) =>
        h(
          "tr",
          {},
          h("td", {}, h("pre", { class: "text", text: s.prompt })),
          h("td", {}, h("pre", { class: "text", text: s.completion })),
          h("td", { class: "num", text: num(s.reward, 3) }),
        ),
      ),
    );
    if (!rows.length) samplesBody.replaceChildren(h("tr", {}, h("td", { colSpan: 3, class: "muted", text: "No samples yet (RL jobs report a few per step)." })));
  }

  const noCheckpoints = h("tr", {}, h("td", { colSpan: 4, class: "muted", text: "No checkpoints yet." }));

  function addCheckpoint(c) {
    noCheckpoints.remove();
    const button = h("button", { type: "button", class: "secondary", text: "Download", "aria-label": `Download checkpoint at step ${c.step_number}` });
    button.addEventListener("click", () =>
      downloadCheckpoint(jobId, c.id).catch(
        (err) => (error.textContent = `Download failed: ${err.message}`),
      ),
    );
    ckptBody.prepend(
      h("tr", {}, h("td", { class: "num", text: String(c.step_number) }), h("td", {}, h("code", { text: c.fine_tuned_model_checkpoint })), h("td", {}, time(c.created_at)), h("td", {}, button)),
    );
  }

  function addEvent(e) {
    events.prepend(h("li", { class: e.level }, time(e.created_at), h("span", { text: e.message })));
    // One "Step N" event per step: keep the page light on long runs (GET .../events has all).
    while (events.childElementCount > MAX_EVENTS) events.lastElementChild.remove();
  }

  stepSelect.addEventListener("change", () => {
    follow = false;
    renderSamples();
  });

  for (const [action, button] of Object.entries(buttons)) {
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const job = await api(`/fine_tuning/jobs/${encodeURIComponent(jobId)}/${action}`, { method: "POST" });
        renderJob(job);
        announce(`Job ${action} requested; status ${job.status}`);
        error.textContent = "";
      } catch (err) {
        error.textContent = `${action} failed: ${err.message}`;
      }
    });
  }

  let lastStatus = null;
  watchJob(jobId, {
    signal,
    onConnect() {
      series.clear();
      samples = new Map();
      ckptBody.replaceChildren(noCheckpoints);
      events.replaceChildren();
      renderSamples();
    },
    onMessage(type, data) {
      if (type === "job") {
        renderJob(data);
        if (lastStatus && lastStatus !== data.status) announce(`Job is now ${data.status}`);
        lastStatus = data.status;
      } else if (type === "metrics") {
        series.add(data.step, data.metrics);
        grid.update();
      } else if (type === "samples") {
        samples.set(data.step, data.samples);
        renderSamples();
      } else if (type === "checkpoint") {
        addCheckpoint(data);
      } else if (type === "event") {
        addEvent(data);
      }
    },
    onError(err) {
      error.textContent = `Live updates interrupted: ${err.message}`;
    },
  });
}
