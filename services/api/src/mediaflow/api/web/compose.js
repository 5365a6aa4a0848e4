// The compose view (#/compose): a timeline of uploaded media (items with trims, durations and titles),
// a logo, a crossfade between items and the output; submitted as a compose job (POST /v1/jobs), then
// followed on the job page. The API validates: its problems are shown next to the part they name.
import { api, ApiError, uploadMedia } from "./api.js";
import { $, el, fmtBytes, showError } from "./ui.js";

const KINDS = ["video", "image", "intro", "outro", "transition"];
const POSITIONS = ["top-right", "top-left", "bottom-right", "bottom-left", "center"];
const catalogue = new Map();  // media id -> media record the tenant uploaded
let rows = [];  // {li, uid, fields: {kind, media, start, end, duration, title}, problem}
let uid = 0;

/** Media uploaded elsewhere in the console (the upload view) can go on a timeline too. */
export function rememberMedia(media) {
  catalogue.set(media.id, media);
  refreshMediaSelects();
}

const isPicture = (m) => (m.streams || []).some((s) => s.kind === "video");
const isStill = (m) => /^image\//.test(m.content_type || "") || /image2|_pipe$/.test(m.format || "");

function describe(m) {
  const video = (m.streams || []).find((s) => s.kind === "video");
  const what = !video ? "audio only" : isStill(m) ? `image ${video.width}×${video.height}` : `${video.width}×${video.height}, ${(m.duration ?? 0).toFixed(1)} s`;
  return `${m.filename} (${what})`;
}

function mediaOptions(select, { none } = {}) {
  const value = select.value;
  const media = [...catalogue.values()].sort((a, b) => String(b.created_at).localeCompare(String(a.created_at)));
  select.replaceChildren(
    ...(none ? [el("option", { value: "" }, none)] : []),
    ...media.map((m) => el("option", { value: m.id, disabled: !isPicture(m) }, describe(m))),
  );
  if ([...select.options].some((o) => o.value === value)) select.value = value;
  else if (!none) select.value = (media.find(isPicture) || {}).id || "";
}

function refreshMediaSelects() {
  for (const row of rows) mediaOptions(row.fields.media);
  mediaOptions($("#compose-logo"), { none: "none" });
}

/** What this tenant has uploaded (GET /v1/media, the newest 200), and this tab's uploads. */
async function loadCatalogue() {
  const page = await api("v1/media?limit=200");
  for (const m of page.media) catalogue.set(m.id, m);
  refreshMediaSelects();
}

function numberField(row, name, label, attrs) {
  const id = `item-${row.uid}-${name}`;
  const input = el("input", { id, type: "number", inputmode: "decimal", class: `item-${name}`, ...attrs });
  row.fields[name] = input;
  return el("span", { class: "field" }, el("label", { for: id }, label), input);
}

function addRow(kind = "video") {
  const row = { uid: ++uid, fields: {} };
  const kindId = `item-${row.uid}-kind`, mediaId = `item-${row.uid}-media`, titleId = `item-${row.uid}-title`;
  row.fields.kind = el("select", { id: kindId, class: "item-kind" }, KINDS.map((k) => el("option", {}, k)));
  row.fields.kind.value = kind;
  row.fields.media = el("select", { id: mediaId, class: "item-media" });
  row.fields.title = el("input", { id: titleId, type: "text", class: "item-title", maxlength: 200, placeholder: "none" });
  row.problem = el("p", { class: "field-problem", role: "alert" });
  const move = (delta) => {
    const i = rows.indexOf(row), j = i + delta;
    if (j < 0 || j >= rows.length) return;
    [rows[i], rows[j]] = [rows[j], rows[i]];
    renderRows();
    row.li.querySelector(delta < 0 ? ".move-up" : ".move-down").focus();
  };
  const heading = el("h3", { class: "item-heading" });
  row.li = el("li", { class: "compose-item" },
    heading,
    el("div", { class: "item-fields" },
      el("span", { class: "field" }, el("label", { for: kindId }, "Kind"), row.fields.kind),
      el("span", { class: "field wide" }, el("label", { for: mediaId }, "Media"), row.fields.media),
      numberField(row, "start", "Trim start (s)", { min: 0, step: 0.1, placeholder: "0" }),
      numberField(row, "end", "Trim end (s)", { min: 0, step: 0.1, placeholder: "end" }),
      numberField(row, "duration", "Duration (s)", { min: 0.1, step: 0.1, placeholder: "whole clip" }),
      el("span", { class: "field wide" }, el("label", { for: titleId }, "Title text"), row.fields.title)),
    el("div", { class: "row" },
      el("button", { type: "button", class: "move-up", onclick: () => move(-1) }, "Move up"),
      el("button", { type: "button", class: "move-down", onclick: () => move(1) }, "Move down"),
      el("button", { type: "button", class: "remove-item", onclick: () => {
        rows.splice(rows.indexOf(row), 1);
        renderRows();
        $("#compose-add").focus();
      } }, "Remove")),
    row.problem);
  row.heading = heading;
  // a still picture needs a duration: picking one fills in a few seconds
  row.fields.media.addEventListener("change", () => {
    const m = catalogue.get(row.fields.media.value);
    if (m && isStill(m)) {
      if (row.fields.kind.value === "video") row.fields.kind.value = "image";
      if (!row.fields.duration.value) row.fields.duration.value = "3";
    }
  });
  rows.push(row);
  mediaOptions(row.fields.media);
  renderRows();
  return row;
}

function renderRows() {
  rows.forEach((row, i) => {
    row.heading.textContent = `Item ${i + 1}`;
    row.li.dataset.index = String(i);
    row.li.setAttribute("aria-label", `Item ${i + 1}`);
    for (const [cls, what] of [[".move-up", "up"], [".move-down", "down"]]) {
      row.li.querySelector(cls).setAttribute("aria-label", `Move item ${i + 1} ${what}`);
    }
    row.li.querySelector(".remove-item").setAttribute("aria-label", `Remove item ${i + 1}`);
  });
  $("#compose-items").replaceChildren(...rows.map((r) => r.li));
  $("#compose-empty").hidden = rows.length > 0;
}

const num = (input) => (input.value.trim() === "" ? null : Number(input.value));

function timeline() {
  const logoId = $("#compose-logo").value;
  const logo = logoId ? { media_id: logoId, position: $("#compose-logo-position").value, scale: num($("#compose-logo-scale")) ?? 0.12 } : null;
  const items = rows.map((row) => {
    const f = row.fields;
    const item = { kind: f.kind.value, media_id: f.media.value || null };
    const start = num(f.start), end = num(f.end), duration = num(f.duration);
    if (start !== null || end !== null) item.trim = { start: start ?? 0, end };
    if (duration !== null) item.duration = duration;
    const words = f.title.value.trim().split(/\s+/).filter(Boolean);
    if (words.length) item.text = { words, position: "center" };
    if (logo) item.logo = logo;
    return item;
  });
  return {
    output: { resolution: $("#compose-resolution").value, fps: num($("#compose-fps")) ?? 30, quality: $("#compose-quality").value },
    items,
    crossfade: num($("#compose-crossfade")) ?? 0,
  };
}

function clearProblems() {
  $("#compose-problem").hidden = true;
  for (const p of document.querySelectorAll("#compose-form .field-problem")) p.textContent = "";
  for (const row of rows) row.li.classList.remove("invalid");
}

/** Put each of the API's complaints next to what it names: `items.<n>…`, `output…`, `crossfade`, a logo. */
function showProblems(err) {
  const box = $("#compose-problem");
  box.hidden = false;
  box.replaceChildren(el("strong", { class: "error-code" }, err.code || "error"), ": ", err.body?.detail || err.message);
  const complaints = err.body?.errors?.length ? err.body.errors : [{ loc: "", msg: err.body?.detail || err.message }];
  for (const { loc, msg } of complaints) {
    const text = String(msg).replace(/^Value error, /, "");
    const where = loc || (text.match(/^(items\.\d+[\w.]*):/) || [])[1] || "";
    const item = where.match(/^items\.(\d+)/);
    let target = null;
    if (/\.logo\b/.test(where)) target = $('#compose-form .field-problem[data-for="logo"]');
    else if (item && rows[Number(item[1])]) {
      rows[Number(item[1])].li.classList.add("invalid");
      target = rows[Number(item[1])].problem;
    } else if (where.startsWith("output")) target = $('#compose-form .field-problem[data-for="output"]');
    else if (where.startsWith("crossfade")) target = $('#compose-form .field-problem[data-for="crossfade"]');
    if (target) target.textContent = [target.textContent, `${where ? `${where}: ` : ""}${text.replace(/^items\.\d+[\w.]*: /, "")}`].filter(Boolean).join("; ");
  }
}

async function submit(event) {
  event.preventDefault();
  showError(null);
  clearProblems();
  if (!rows.length) { showProblems(new Error("add at least one item")); return; }
  $("#compose-submit").disabled = true;
  try {
    const job = await api("v1/jobs", { method: "POST", json: { type: "compose", options: timeline() } });
    location.hash = `#/jobs/${job.id}`;  // followed live on the job page, which plays output.mp4
  } catch (err) {
    if (err instanceof ApiError) showProblems(err);
    else showError(err);
  } finally {
    $("#compose-submit").disabled = false;
  }
}

async function uploadFiles() {
  const input = $("#compose-file");
  const files = [...input.files];
  input.value = "";
  const status = $("#compose-upload-status");
  for (const file of files) {
    status.textContent = `uploading ${file.name} (${fmtBytes(file.size)})…`;
    try {
      const media = await uploadMedia(file, (loaded, total) => { $("#compose-upload-progress").value = total ? loaded / total : 1; });
      rememberMedia(media);
      status.textContent = `uploaded ${file.name}`;
    } catch (err) {
      status.textContent = `${file.name}: ${err.message}`;
    }
  }
}

export function setupCompose() {
  $("#compose-form").addEventListener("submit", submit);
  $("#compose-add").addEventListener("click", () => addRow().fields.kind.focus());
  $("#compose-file").addEventListener("change", uploadFiles);
  $("#compose-logo-position").replaceChildren(...POSITIONS.map((p) => el("option", {}, p)));
}

export async function openCompose() {
  if (!rows.length) addRow();
  try {
    await loadCatalogue();
  } catch (err) {
    showError(err);
  }
}
