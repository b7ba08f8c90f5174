// The job view: status and the actions the job allows now, live curves (those of what the
// job reports), rollout samples per step (RL), checkpoints with downloads, the job's files,
// hyperparameters and metadata, and the event log with warnings marked, all fed by the
// job's live stream (no reloading).

import { api, downloadCheckpoint, watchJob } from "./api.js";
import { ChartGrid, Series, evaluation } from "./charts.js";
import { algorithm, badge, fileSize, h, num, progressCell, queueText, relative, time } from "./format.js";

const MAX_EVENTS = 500;
// Event levels marked in words as well as colour; they never drop out of the list.
const MARKED = { warn: "warning", error: "error" };

function announce(text) {
  document.getElementById("announce").textContent = text;
}

function isRL(job) {
  return ["reinforcement", "lco"].includes(job.method?.type);
}

// A hyperparameter's value: numbers as numbers, null (not set) as "–", the rest as JSON.
function value(v) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return num(v, 6);
  return typeof v === "string" ? v : JSON.stringify(v);
}

// A LoRA job's model is an adapter served on its base (`adapter`; null for a full fine-tune,
// which gets no note): "LoRA adapter (r=16) on lco-tiny", r from the job's LoRA settings.
function adapterNote(job) {
  if (!job.adapter) return null;
  const r = job.method?.[job.method?.type]?.hyperparameters?.lora?.r;
  const text = ` · LoRA adapter${r ? ` (r=${r})` : ""} on ${job.adapter.base_model}`;
  return h("span", { class: "muted", id: "job-adapter", text });
}

function definitions(rows) {
  return rows.flatMap(([k, ...v]) => [h("dt", { text: k }), h("dd", {}, ...v)]);
}

export function jobView(root, signal, jobId) {
  const title = h("h1", { text: jobId, tabindex: "-1" });
  const status = h("span", { id: "job-status" });
  const error = h("p", { class: "error", role: "alert" });
  // Each shown only while the job object lists it in `actions` (jobs.states.allowed_actions).
  const buttons = {
    cancel: h("button", { type: "button", class: "danger", text: "Cancel", hidden: true }),
    pause: h("button", { type: "button", class: "secondary", text: "Pause", hidden: true }),
    resume: h("button", { type: "button", text: "Resume", hidden: true }),
  };
  const controls = h("div", { class: "actions", role: "group", "aria-label": "Job controls", hidden: true }, Object.values(buttons));
  const summary = h("dl", { class: "summary", id: "job-summary" });
  const config = h("dl", { class: "summary", id: "job-config" });
  const hyperparameters = h("dl", { class: "hyperparameters", id: "hyperparameters" });
  const charts = h("div", { class: "charts", id: "charts" });
  const stepSelect = h("select", { id: "sample-step" });
  const samplesBody = h("tbody");
  const ckptBody = h("tbody");
  const events = h("ol", { class: "events", id: "events", "aria-label": "Event log, newest first" });
  const marked = h("span", { class: "badge warn", id: "events-marked", hidden: true });

  const samples = h(
    "section",
    { "aria-labelledby": "samples-title", hidden: true },
    h("h2", { id: "samples-title", text: "Sample rollouts" }),
    h("p", { class: "filters" }, h("label", { for: "sample-step", text: "Step" }), stepSelect),
    h(
      "table",
      { id: "samples" },
      h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Prompt" }), h("th", { scope: "col", text: "Completion" }), h("th", { scope: "col", class: "num", text: "Reward" }))),
      samplesBody,
    ),
  );
  root.append(
    h("div", { class: "job-head" }, title, status, controls, h("a", { href: `#/compare?a=${encodeURIComponent(jobId)}`, text: "Compare with another job" })),
    error,
    summary,
    h("section", { "aria-labelledby": "curves-title" }, h("h2", { id: "curves-title", text: "Training curves" }), charts),
    h(
      "div",
      { class: "two-col" },
      samples,
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
    h(
      "section",
      { "aria-labelledby": "config-title" },
      h("h2", { id: "config-title", text: "Configuration" }),
      h(
        "div",
        { class: "two-col" },
        config,
        h("section", { "aria-labelledby": "hp-title" }, h("h3", { id: "hp-title", text: "Hyperparameters" }), hyperparameters),
      ),
    ),
    h("section", { "aria-labelledby": "events-title" }, h("h2", { id: "events-title" }, "Event log ", marked), events),
  );

  const series = new Series(jobId);
  const grid = new ChartGrid(charts, [series]);
  signal.addEventListener("abort", () => grid.destroy());
  let steps = new Map(); // step -> samples
  let follow = true; // show the newest step's samples until the user picks one
  const files = new Map(); // file id -> Promise of its object (null if it cannot be read)

  // "file-abc · train.jsonl, 12.3 KB": the name and size fill in when GET /files/ID answers.
  function fileCell(id) {
    if (!id) return "–";
    if (!files.has(id)) files.set(id, api(`/files/${encodeURIComponent(id)}`, { signal }).catch(() => null));
    const about = h("span", { class: "muted" });
    files.get(id).then((f) => f && (about.textContent = ` · ${f.filename}, ${fileSize(f.bytes)}`));
    return h("span", { "data-file": id }, h("code", { text: id }), about);
  }

  let configShown = null;
  function renderConfig(job) {
    const block = job.method?.[job.method?.type] || {};
    const shown = JSON.stringify([job.training_file, job.validation_file, job.result_files, job.user_provided_suffix, job.metadata, block, job.seed, job.pool, job.resources, job.priority]);
    if (shown === configShown) return; // the stream resends the job every step
    configShown = shown;
    const metadata = Object.entries(job.metadata || {});
    const grader = block.grader;
    config.replaceChildren(
      ...definitions([
        ["Training file", fileCell(job.training_file)],
        ["Validation file", fileCell(job.validation_file)],
        ["Result files", job.result_files?.length ? job.result_files.map((id) => h("div", {}, fileCell(id))) : "–"],
        ["Suffix", job.user_provided_suffix ? h("code", { text: job.user_provided_suffix }) : "–"],
        ["Metadata", metadata.length ? h("ul", { class: "plain" }, metadata.map(([k, v]) => h("li", {}, h("code", { text: k }), `: ${v}`))) : "–"],
        ...(grader ? [["Grader", `${grader.type}${grader.name ? ` (${grader.name})` : ""}`]] : []),
        ["Seed", String(job.seed ?? "–")],
        ["Resources", `${job.resources?.gpus ?? "–"} GPU(s) in pool ${job.pool ?? "–"}, priority ${job.priority}`],
      ]),
    );
    const hp = Object.entries(block.hyperparameters || {});
    hyperparameters.replaceChildren(
      ...hp.map(([k, v]) => h("div", { "data-name": k }, h("dt", {}, h("code", { text: k })), h("dd", { text: value(v) }))),
    );
    if (!hp.length) hyperparameters.replaceChildren(h("p", { class: "muted", text: "None given." }));
  }

  function renderJob(job) {
    status.replaceChildren(badge(job.status));
    const d = job.status_details || {};
    const rows = [
      ["Status", badge(job.status), d.since ? ` since ${relative(d.since)}` : ""],
      ["Phase", h("span", { id: "job-phase", text: [d.phase, d.reason, d.message].filter(Boolean).join(" · ") || "–" })],
      ["Queue", queueText(job)],
      ["Progress", progressCell(job)],
      ["Model", job.model],
      ["Method", algorithm(job)],
      ["Fine-tuned model", job.fine_tuned_model || "–", adapterNote(job)],
      ["Attempts", String(job.attempts ?? "–")],
      ["Created", time(job.created_at)],
      ["Finished", time(job.finished_at)],
    ];
    if (job.error) rows.push(["Error", `${job.error.code}: ${job.error.message}`]);
    summary.replaceChildren(...definitions(rows));
    const allowed = job.actions || [];
    const focused = Object.values(buttons).find((b) => b === document.activeElement);
    for (const [action, button] of Object.entries(buttons)) button.hidden = !allowed.includes(action);
    controls.hidden = !allowed.length;
    if (focused?.hidden) keepFocus();
    samples.hidden = !isRL(job);
    renderConfig(job);
  }

  // A button that goes away takes focus with it: hand it to pause or resume, whichever is
  // shown (never to Cancel, where a second Enter would do harm), or to the title.
  function keepFocus() {
    ([buttons.resume, buttons.pause].find((b) => !b.hidden) || title).focus();
  }

  function renderSamples() {
    const all = [...steps.keys()].sort((a, b) => b - a);
    const chosen = follow ? all[0] : Number(stepSelect.value);
    stepSelect.replaceChildren(...all.map((s) => h("option", { value: s, text: `step ${s}`, selected: s === chosen })));
    const rows = steps.get(chosen) || [];
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

  let counts = {};
  function addEvent(e) {
    const name = MARKED[e.level];
    events.prepend(
      h(
        "li",
        { class: e.level, "data-level": e.level },
        time(e.created_at),
        " ",
        name ? [h("strong", { class: "level", text: `${name[0].toUpperCase()}${name.slice(1)}:` }), " "] : null,
        h("span", { text: e.message }),
      ),
    );
    if (name) {
      counts[e.level] = (counts[e.level] || 0) + 1;
      marked.textContent = Object.entries(counts)
        .map(([level, n]) => `${n} ${MARKED[level]}${n === 1 ? "" : "s"}`)
        .join(", ");
      marked.hidden = false;
    }
    // One "Step N" event per step: keep the page light on long runs (GET .../events has
    // all), dropping the oldest plain event first.
    while (events.childElementCount > MAX_EVENTS) {
      const plain = events.querySelectorAll("li:not(.warn):not(.error)");
      (plain[plain.length - 1] || events.lastElementChild).remove();
    }
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
        button.disabled = false;
        renderJob(job);
        if (button.hidden) keepFocus();
        announce(`Job ${action} requested; status ${job.status}`);
        error.textContent = "";
      } catch (err) {
        button.disabled = false;
        error.textContent = `${action} failed: ${err.message}`;
      }
    });
  }

  let lastStatus = null;
  watchJob(jobId, {
    signal,
    onConnect() {
      series.clear();
      grid.update();
      steps = new Map();
      ckptBody.replaceChildren(noCheckpoints);
      events.replaceChildren();
      counts = {};
      marked.hidden = true;
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
        steps.set(data.step, data.samples);
        renderSamples();
      } else if (type === "checkpoint") {
        addCheckpoint(data);
      } else if (type === "event") {
        addEvent(data);
        const values = evaluation(data);
        if (values && series.merge(data.data.step, values)) grid.update();
      }
    },
    onError(err) {
      error.textContent = `Live updates interrupted: ${err.message}`;
    },
  });
}
