// Small DOM and formatting helpers shared by the views.

// An element with attributes (`class`, `text`, data-*, aria-*, properties) and children.
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") el.textContent = value;
    else if (name === "class") el.className = value;
    else if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name in el && !name.includes("-")) el[name] = value;
    else el.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export function time(epochSeconds) {
  if (!epochSeconds) return "–";
  const d = new Date(epochSeconds * 1000);
  return h("time", { dateTime: d.toISOString(), text: d.toLocaleString() });
}

export function relative(epochSeconds) {
  if (!epochSeconds) return "–";
  const s = Math.round(epochSeconds - Date.now() / 1000);
  const abs = Math.abs(s);
  const text = abs < 90 ? `${abs} s` : abs < 5400 ? `${Math.round(abs / 60)} min` : `${(abs / 3600).toFixed(1)} h`;
  return s >= 0 ? `in ${text}` : `${text} ago`;
}

export function num(value, digits = 4) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  if (Number.isInteger(value)) return String(value);
  return Math.abs(value) >= 1000 ? value.toFixed(0) : Number(value.toPrecision(digits)).toString();
}

// 812 B, 12.3 KB, 4.1 MB
export function fileSize(n) {
  if (typeof n !== "number") return "–";
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let i = -1;
  do {
    n /= 1024;
    i += 1;
  } while (n >= 1024 && i < units.length - 1);
  return `${n.toFixed(1)} ${units[i]}`;
}

export function badge(status) {
  return h("span", { class: `badge ${status}`, text: status, "data-status": status });
}

export function algorithm(job) {
  const method = job.method || {};
  const block = method[method.type] || {};
  const algo = block.hyperparameters?.algorithm;
  return method.type === "reinforcement" && algo ? `${method.type} (${algo})` : method.type || "–";
}

// "3 of 5 (ETA in 2 min)" from the job's `queue` extension, when the server sends one.
export function queueText(job) {
  const q = job.queue;
  if (!q || q.position === null || q.position === undefined) return "–";
  const eta = q.estimated_start_at ? ` · starts ${relative(q.estimated_start_at)}` : "";
  return `#${q.position}${q.ahead !== undefined && q.ahead !== null ? ` (${q.ahead} ahead)` : ""}${eta}`;
}

export function progressCell(job) {
  const p = job.progress || {};
  const label = p.total_steps ? `${p.step} / ${p.total_steps}` : `${p.step ?? 0}`;
  const bar = p.total_steps
    ? h("progress", { max: p.total_steps, value: p.step ?? 0, "aria-label": `step ${label}` })
    : null;
  return [bar, " ", label];
}
