// Small DOM and formatting helpers shared by the console's views.

export const $ = (sel, root = document) => root.querySelector(sel);

export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else if (k in node && typeof v !== "string") node[k] = v;
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) node.append(c);  // nested lists too
  return node;
}

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const c of children) node.append(c);
  return node;
}

export function showError(err) {
  $("#error").textContent = err ? String(err.message || err) : "";
}

export const fmtTime = (d) => (d ? new Date(d).toLocaleString() : "—");
export const fmtSecs = (s) => (s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`);
export const fmtBytes = (n) => (n < 1024 ? `${n} B` : n < 1 << 20 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / (1 << 20)).toFixed(1)} MiB`);

// ---- ETA --------------------------------------------------------------------------------------------
// The API has no ETA: it is estimated from the progress this tab saw move (the rate over the last
// minute), or, before two readings are far enough apart, from the average rate since the job started.

const RATE_WINDOW_MS = 60_000;
const MIN_SPAN_MS = 2_000;
const seen = new Map();  // job id -> [{t, p}] readings whose progress changed, oldest first

/** Seconds left for a running job (null when unknown); every call records a reading. */
export function etaSeconds(job, now = Date.now()) {
  if (job.state !== "running" || !(job.progress < 1)) {
    seen.delete(job.id);
    return null;
  }
  const readings = seen.get(job.id) || [];
  const last = readings[readings.length - 1];
  if (!last || job.progress !== last.p) readings.push({ t: now, p: job.progress });
  while (readings.length > 2 && readings[1].t < now - RATE_WINDOW_MS) readings.shift();
  seen.set(job.id, readings);
  const first = readings[0];
  let rate = now - first.t >= MIN_SPAN_MS && job.progress > first.p ? (job.progress - first.p) / (now - first.t) : 0;
  if (!rate && job.started_at && job.progress >= 0.02) {
    const elapsed = now - new Date(job.started_at).getTime();
    if (elapsed > MIN_SPAN_MS) rate = job.progress / elapsed;
  }
  return rate > 0 ? (1 - job.progress) / rate / 1000 : null;
}

export function fmtEta(seconds) {
  if (seconds === null) return "—";
  if (seconds < 1) return "< 1 s";
  if (seconds < 90) return `~${Math.round(seconds)} s`;
  if (seconds < 5400) return `~${Math.round(seconds / 60)} min`;
  return `~${(seconds / 3600).toFixed(1)} h`;
}

// ---- sparkline --------------------------------------------------------------------------------------

/** Jobs ended per minute as small stacked bars (succeeded under failed), one per minute, oldest left. */
export function sparkline(points, { width = 150, height = 28 } = {}) {
  const peak = Math.max(1, ...points.map((p) => p.succeeded + p.failed));
  const step = width / Math.max(points.length, 1);
  const succeeded = points.reduce((n, p) => n + p.succeeded, 0);
  const failed = points.reduce((n, p) => n + p.failed, 0);
  const label = `${succeeded} succeeded, ${failed} failed in the last ${points.length} minutes; at most ${peak} a minute`;
  const bars = [];
  points.forEach((p, i) => {
    const x = (i * step + 0.5).toFixed(1);
    const w = Math.max(step - 1, 1).toFixed(1);
    const hs = (p.succeeded / peak) * (height - 2);
    const hf = (p.failed / peak) * (height - 2);
    const tip = `${new Date(p.minute).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}: ${p.succeeded} succeeded, ${p.failed} failed`;
    if (hs) bars.push(svg("rect", { x, y: (height - hs).toFixed(1), width: w, height: hs.toFixed(1), class: "ok" }, svg("title", {}, tip)));
    if (hf) bars.push(svg("rect", { x, y: (height - hs - hf).toFixed(1), width: w, height: hf.toFixed(1), class: "bad" }, svg("title", {}, tip)));
  });
  const baseline = svg("line", { x1: 0, x2: width, y1: height - 0.5, y2: height - 0.5, class: "base" });
  return svg("svg", {
    class: "sparkline", width, height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
    "data-succeeded": succeeded, "data-failed": failed,
  }, svg("title", {}, label), baseline, ...bars);
}

/** A delete in two clicks instead of a modal dialog: the first arms the button ("Confirm delete") for
 * 5 s, the second calls `onConfirm` (the button shows its own label again first). */
export function confirmTwice(button, onConfirm) {
  const label = button.textContent;
  let armed = null;
  const disarm = () => { clearTimeout(armed); armed = null; button.textContent = label; button.classList.remove("armed"); };
  button.addEventListener("click", () => {
    if (!armed) {
      button.textContent = "Confirm delete";
      button.classList.add("armed");
      armed = setTimeout(disarm, 5000);
      return;
    }
    disarm();
    onConfirm();
  });
}
