// mediaflow web page: plain JS, no build step. Talks to the REST API with the key from the field;
// follows a job with EventSource (which cannot send headers, so the key goes in ?access_token=,
// accepted by the events route only).
"use strict";

const $ = (sel) => document.querySelector(sel);
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
let apiKey = localStorage.getItem("mediaflow.apiKey") || "";
let source = null;

function headers(extra = {}) {
  return { Authorization: `Bearer ${apiKey}`, ...extra };
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  const type = response.headers.get("content-type") || "";
  const body = type.includes("json") ? await response.json() : await response.text();
  if (!response.ok) {
    const message = body && body.detail ? `${body.code}: ${body.detail}` : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

function showError(err) {
  $("#error").textContent = err ? String(err.message || err) : "";
}

function logLine(text) {
  const li = document.createElement("li");
  li.textContent = text;
  $("#log").appendChild(li);
  li.scrollIntoView({ block: "nearest" });
}

function optionsFor(type) {
  const language = $("#language").value.trim() || null;
  if (type === "transcribe") return { language };
  if (type === "caption") return { transcribe: { language } };
  return {};
}

async function submit(event) {
  event.preventDefault();
  showError(null);
  const file = $("#file").files[0];
  if (!file) return;
  const type = $("#job-type").value;
  $("#submit").disabled = true;
  try {
    const form = new FormData();
    form.append("file", file, file.name);
    $("#state").textContent = "uploading";
    $("#current").hidden = false;
    $("#log").replaceChildren();
    const media = await api("v1/media", { method: "POST", body: form });
    logLine(`uploaded ${media.filename}: ${media.duration?.toFixed(1)} s, ${media.streams.length} streams`);
    const job = await api("v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ type, input: { media_id: media.id }, options: optionsFor(type) }),
    });
    follow(job);
    refreshJobs();
  } catch (err) {
    showError(err);
    $("#state").textContent = "error";
  } finally {
    $("#submit").disabled = false;
  }
}

function follow(job) {
  if (source) source.close();
  $("#current-id").textContent = job.id;
  $("#metrics").hidden = true;
  $("#current").dataset.jobId = job.id;
  render(job.state, job.progress, job.stage);
  const url = `v1/jobs/${encodeURIComponent(job.id)}/events?access_token=${encodeURIComponent(apiKey)}`;
  source = new EventSource(url);  // reconnects by itself, resuming with Last-Event-ID
  source.addEventListener("progress", (e) => {
    const d = JSON.parse(e.data);
    render(null, d.progress, d.stage, d.message);
  });
  source.addEventListener("log", (e) => logLine(JSON.parse(e.data).message));
  source.addEventListener("state", (e) => {
    const d = JSON.parse(e.data);
    render(d.state, d.progress, d.stage, d.message);
    logLine(`state: ${d.state}${d.error ? ` (${d.error.code}: ${d.error.message})` : ""}`);
    if (TERMINAL.has(d.state)) {
      source.close();
      source = null;
      refreshJobs();
      showMetrics(job.id);
    }
  });
}

// The transcriber's coverage guard: how much detected speech the transcript's words cover.
async function showMetrics(jobId) {
  try {
    const job = await api(`v1/jobs/${encodeURIComponent(jobId)}`);
    const m = (job.result || {}).metrics;
    if (!m || typeof m.speech_seconds !== "number") return;
    const share = m.speech_seconds ? ` (${Math.round((100 * m.covered_speech_seconds) / m.speech_seconds)} %)` : "";
    $("#metrics").textContent = `speech ${m.speech_seconds.toFixed(1)} s, covered by words ` +
      `${m.covered_speech_seconds.toFixed(1)} s${share}, windows decoded again ${m.redecoded_windows}`;
    $("#metrics").hidden = false;
  } catch (err) {
    showError(err);
  }
}

function render(state, progress, stage, message) {
  if (state) {
    $("#state").textContent = state;
    $("#current").dataset.state = state;
  }
  if (typeof progress === "number") $("#progress").value = progress;
  $("#stage").textContent = [stage, message].filter(Boolean).join(": ");
}

async function download(job, artifact) {
  try {
    const response = await fetch(artifact.url.replace(/^\//, ""), { headers: headers() });
    if (!response.ok) throw new Error(`download failed: HTTP ${response.status}`);
    const url = URL.createObjectURL(await response.blob());
    const a = document.createElement("a");
    a.href = url;
    a.download = artifact.name;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    showError(err);
  }
}

async function refreshJobs() {
  if (!apiKey) return;
  try {
    const page = await api("v1/jobs?limit=50");
    const rows = page.jobs.map((job) => {
      const tr = document.createElement("tr");
      tr.dataset.jobId = job.id;
      const cells = [job.id, job.type, job.state, `${Math.round(job.progress * 100)}%`,
                     new Date(job.created_at).toLocaleString()];
      for (const text of cells) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      tr.children[2].className = `state-${job.state}`;
      const artifacts = document.createElement("td");
      for (const artifact of job.artifacts) {
        const a = document.createElement("a");
        a.href = "#";
        a.className = "artifact";
        a.textContent = artifact.name;
        a.addEventListener("click", (e) => { e.preventDefault(); download(job, artifact); });
        artifacts.appendChild(a);
      }
      tr.appendChild(artifacts);
      const actions = document.createElement("td");
      const watch = document.createElement("button");
      watch.textContent = "watch";
      watch.addEventListener("click", () => follow(job));
      actions.appendChild(watch);
      tr.appendChild(actions);
      return tr;
    });
    $("#jobs tbody").replaceChildren(...rows);
  } catch (err) {
    showError(err);
  }
}

function useKey() {
  apiKey = $("#api-key").value.trim();
  localStorage.setItem("mediaflow.apiKey", apiKey);
  $("#key-state").textContent = apiKey ? "key set" : "no key";
  refreshJobs();
}

$("#api-key").value = apiKey;
$("#save-key").addEventListener("click", useKey);
$("#api-key").addEventListener("change", useKey);
$("#job-form").addEventListener("submit", submit);
$("#refresh").addEventListener("click", refreshJobs);
if (apiKey) useKey();
