// mediaflow console: plain ES modules, no build step. Views by hash: #/upload, #/jobs?state=&type=&limit=,
// #/jobs/<id>[?t=<seconds>], #/queues, #/compose, #/batches[/<id>], #/search?q=, #/speakers. The API key stays in
// sessionStorage and goes only in Authorization headers.
import {
  api, ApiError, TERMINAL, artifactBlobUrl, artifactText, downloadArtifact, eventTime, followEvents,
  getKey, jobPath, mediaBlobUrl, setKey, uploadMedia,
} from "./api.js";
import { closeBatch, listBatches, openBatch, setupBatches } from "./batch.js";
import { openCompose, rememberMedia, setupCompose } from "./compose.js";
import { openSearch, setupSearch } from "./search.js";
import { openSpeakers, renderSpeakers } from "./speakers.js";
import { renderTranscript, speakerColours } from "./transcript.js";
import { $, confirmTwice, el, etaSeconds, fmtBytes, fmtEta, fmtSecs, fmtTime, showError, sparkline } from "./ui.js";

const VIEWS = ["signin", "upload", "jobs", "job", "queues", "compose", "batch", "search", "speakers"];
const POLL_MS = 1500;
const localMedia = new Map();  // media id -> File uploaded from this tab (played without downloading it back)

// ---- sign-in --------------------------------------------------------------------------------------

function renderKeyState() {
  const signed = Boolean(getKey());
  $("#key-state").textContent = signed ? "signed in" : "not signed in";
  $("#sign-out").hidden = !signed;
  document.body.classList.toggle("signed-in", signed);
}

let signingIn = Promise.resolve();

function signIn(event) {
  event.preventDefault();
  signingIn = checkAndKeep();  // a submit right after "Sign in" waits for this
}

async function checkAndKeep() {
  showError(null);
  const key = $("#api-key").value.trim();
  if (!key) return;
  try {
    await api("v1/jobs?limit=1", { key });  // checks the key before keeping it
    setKey(key);
    $("#api-key").value = "";
    renderKeyState();
    if (!location.hash || location.hash === "#/signin") location.hash = "#/upload";
    else route();
    refreshStatus();
  } catch (err) {
    showError(err);
  }
}

function signOut() {
  setKey("");
  renderKeyState();
  stopJobStream();
  location.hash = "#/signin";
}

// ---- status banner --------------------------------------------------------------------------------

async function refreshStatus() {
  if (!getKey()) return;
  try {
    const status = await api("v1/status");
    const banner = $("#status-banner");
    banner.hidden = status.status === "ok";
    banner.dataset.status = status.status;
    banner.replaceChildren(
      el("strong", {}, `Service ${status.status}`),
      el("ul", {}, status.problems.map((p) => el("li", {}, `${p.code}${p.queue ? ` (${p.queue})` : ""}: ${p.message}`))),
    );
    $("#service-status").textContent = `Service status: ${status.status}`;
  } catch (err) {
    if (!(err instanceof ApiError)) return;
  }
}

// ---- job rows (the upload view's recent jobs and the jobs view share them) ---------------------

function actionButtons(job, onChange) {
  const buttons = [];
  const act = async (button, action) => {
    button.disabled = true;
    showError(null);
    try {
      await action();
      await onChange();
    } catch (err) {
      showError(err);
    } finally {
      button.disabled = false;
    }
  };
  if (!TERMINAL.has(job.state) && job.state !== "cancelling") {
    const b = el("button", { type: "button", class: "cancel", "aria-label": `Cancel ${job.id}` }, "Cancel");
    b.addEventListener("click", () => act(b, () => api(`${jobPath(job.id)}/cancel`, { method: "POST" })));
    buttons.push(b);
  }
  if (job.state === "failed" || job.state === "cancelled") {
    const b = el("button", { type: "button", class: "retry", "aria-label": `Retry ${job.id}` }, "Retry");
    b.addEventListener("click", () => act(b, () => api(`${jobPath(job.id)}/retry`, { method: "POST" })));
    buttons.push(b);
  }
  const del = el("button", { type: "button", class: "delete", "aria-label": `Delete ${job.id}` }, "Delete");
  confirmTwice(del, () => act(del, () => api(jobPath(job.id), { method: "DELETE" })));
  buttons.push(del);
  return buttons;
}

function artifactLinks(job) {
  return job.artifacts.map((artifact) =>
    el("a", {
      href: `#/jobs/${job.id}`,
      class: "artifact",
      title: `${artifact.content_type}, ${fmtBytes(artifact.size)}`,
      onclick: (e) => { e.preventDefault(); downloadArtifact(artifact).catch(showError); },
    }, artifact.name));
}

function progressCell(job) {
  const pct = Math.round(job.progress * 100);
  return [
    el("progress", { max: 1, value: job.progress, "aria-label": `progress of ${job.id}` }),
    el("span", { class: "pct" }, `${pct}%`),
    job.state === "running" || job.state === "cancelling" ? el("span", { class: "stage" }, [job.stage, job.message].filter(Boolean).join(": ")) : null,
  ].filter(Boolean);
}

/** Keeps a <tbody> in step with a list of jobs, updating rows in place (focus survives a refresh). */
class JobRows {
  constructor(tbody, onChange) {
    this.tbody = tbody;
    this.onChange = onChange;
    this.rows = new Map();
    this.jobs = [];
  }

  render(jobs) {
    this.jobs = jobs;
    const keep = new Set(jobs.map((j) => j.id));
    for (const [id, tr] of this.rows) if (!keep.has(id)) { tr.remove(); this.rows.delete(id); }
    jobs.forEach((job, i) => {
      let tr = this.rows.get(job.id);
      if (!tr) {
        tr = el("tr", { dataset: { jobId: job.id } });
        for (let c = 0; c < 8; c++) tr.appendChild(el("td"));
        tr.children[0].appendChild(el("a", { href: `#/jobs/${job.id}`, class: "job-link" }, job.id));
        tr.children[1].textContent = job.type;
        tr.children[4].className = "eta num";
        tr.children[5].textContent = fmtTime(job.created_at);
        this.rows.set(job.id, tr);
      }
      if (this.tbody.children[i] !== tr) this.tbody.insertBefore(tr, this.tbody.children[i] || null);
      tr.children[4].textContent = fmtEta(etaSeconds(job));  // changes with time, not only with the job
      const signature = JSON.stringify([job.state, job.progress, job.stage, job.message, job.artifacts.length]);
      if (tr.dataset.signature === signature) return;
      tr.dataset.signature = signature;
      tr.dataset.state = job.state;
      const state = tr.children[2];
      state.className = `state state-${job.state}`;
      state.textContent = job.state;
      if (job.error) state.appendChild(el("span", { class: "error-code" }, ` ${job.error.code}`));
      tr.children[3].replaceChildren(...progressCell(job));
      tr.children[6].replaceChildren(...artifactLinks(job));
      const focused = tr.children[7].contains(document.activeElement) ? document.activeElement.className : null;
      tr.children[7].replaceChildren(...actionButtons(job, this.onChange));
      if (focused) {
        const again = tr.children[7].querySelector(`.${focused.split(" ")[0]}`) || tr.children[7].querySelector("button");
        if (again) again.focus();
      }
    });
  }

  get live() {
    return this.jobs.some((j) => !TERMINAL.has(j.state));
  }
}

// ---- upload view ------------------------------------------------------------------------------------

const uploads = [];  // {file, li, progress, status, state}
let currentStream = null;
const recent = new JobRows($("#jobs tbody"), () => refreshRecent());

function addFiles(files) {
  for (let i = uploads.length - 1; i >= 0; i--) {
    if (uploads[i].state !== "ready") { uploads[i].li.remove(); uploads.splice(i, 1); }
  }
  for (const file of files) {
    const progress = el("progress", { max: 1, value: 0, "aria-label": `upload of ${file.name}` });
    const status = el("span", { class: "file-status" }, "ready");
    const remove = el("button", { type: "button", class: "remove", "aria-label": `Remove ${file.name}` }, "×");
    const li = el("li", { class: "file", dataset: { name: file.name, state: "ready", progressEvents: "0" } },
      el("span", { class: "file-name" }, file.name), el("span", { class: "muted" }, fmtBytes(file.size)),
      progress, status, remove);
    const item = { file, li, progress, status, state: "ready" };
    remove.addEventListener("click", () => { li.remove(); uploads.splice(uploads.indexOf(item), 1); });
    uploads.push(item);
    $("#files").appendChild(li);
  }
}

function setItem(item, state, text) {
  item.state = state;
  item.li.dataset.state = state;
  item.status.replaceChildren(...(Array.isArray(text) ? text : [text]));
}

function optionsFor(type) {
  const language = $("#language").value.trim() || null;
  // who speaks: diarized, and the speakers (their names once known) in the captions too
  const speakers = $("#diarize").checked ? { diarize: true, captions: { speaker_labels: true } } : {};
  if (type === "transcribe") return { language, ...speakers };
  if (type === "caption") return { transcribe: { language, ...speakers } };
  return {};
}

async function submitUploads(event) {
  event.preventDefault();
  showError(null);
  await signingIn;
  if (!getKey()) { showError("sign in first"); return; }
  const items = uploads.filter((u) => u.state === "ready" || u.state === "failed");
  if (!items.length) { showError("choose or drop at least one file"); return; }
  const type = $("#job-type").value;
  $("#submit").disabled = true;
  $("#batch").hidden = true;
  try {
    if (items.length === 1) {
      $("#current").hidden = false;
      $("#log").replaceChildren();
      $("#metrics").hidden = true;
      $("#state").textContent = "uploading";
      $("#current").dataset.state = "uploading";
    }
    const uploaded = await Promise.all(items.map(async (item) => {
      setItem(item, "uploading", "uploading");
      try {
        const media = await uploadMedia(item.file, (loaded, total) => {
          item.progress.value = total ? loaded / total : 1;
          item.li.dataset.progressEvents = String(Number(item.li.dataset.progressEvents) + 1);
        });
        localMedia.set(media.id, item.file);
        rememberMedia(media);
        setItem(item, "uploaded", `uploaded: ${media.duration?.toFixed(1) ?? "?"} s`);
        if (items.length === 1) logLine(`uploaded ${media.filename}: ${media.duration?.toFixed(1)} s, ${media.streams.length} streams`);
        return { item, media };
      } catch (err) {
        setItem(item, "failed", `upload failed: ${err.message}`);
        return null;
      }
    }));
    const ok = uploaded.filter(Boolean);
    if (!ok.length) throw new Error("no file could be uploaded");
    const body = (media) => ({ type, input: { media_id: media.id }, options: optionsFor(type) });
    if (items.length === 1) {
      const job = await api("v1/jobs", { method: "POST", json: body(ok[0].media) });
      setItem(ok[0].item, "accepted", jobLinkText(job));
      followCurrent(job);
    } else {  // one batch: the same template for every file, each item accepted or rejected on its own
      let result;
      try {
        result = await api("v1/batches", { method: "POST", json: {
          items: ok.map((u) => ({ media_id: u.media.id })),
          template: { type, options: optionsFor(type) },
        } });
      } catch (err) {
        if (!(err instanceof ApiError) || !err.body || !err.body.rejected) throw err;
        result = { id: null, accepted: [], rejected: err.body.rejected };  // 422 batch_rejected: every item
      }
      const acceptedAt = new Map(result.accepted.map((a) => [a.index, a]));
      const rejectedAt = new Map(result.rejected.map((r) => [r.index, r]));
      ok.forEach((u, index) => {
        const rejection = rejectedAt.get(index);
        if (rejection) setItem(u.item, "rejected", `rejected: ${rejection.code}: ${rejection.detail}`);
        else setItem(u.item, "accepted", jobLinkText({ id: acceptedAt.get(index).job_id, state: "queued" }));
      });
      $("#batch").hidden = false;
      $("#batch-link").textContent = result.id || "";
      $("#batch-link").href = result.id ? `#/batches/${result.id}` : "#/batches";
      $("#batch-summary").textContent =
        `${result.accepted.length} accepted, ${result.rejected.length} rejected, ${items.length - ok.length} failed to upload`;
    }
    refreshRecent();
  } catch (err) {
    showError(err);
    if (items.length === 1) {
      $("#state").textContent = "error";
      $("#current").dataset.state = "error";
    }
  } finally {
    $("#submit").disabled = false;
  }
}

function jobLinkText(job) {
  return ["job ", el("a", { href: `#/jobs/${job.id}`, class: "job-link" }, job.id), ` (${job.state})`];
}

function logLine(text) {
  const li = el("li", {}, text);
  $("#log").appendChild(li);
  li.scrollIntoView({ block: "nearest" });
}

function renderCurrent(state, progress, stage, message) {
  if (state) {
    $("#state").textContent = state;
    $("#current").dataset.state = state;
  }
  if (typeof progress === "number") $("#progress").value = progress;
  $("#stage").textContent = [stage, message].filter(Boolean).join(": ");
}

function followCurrent(job) {
  if (currentStream) currentStream.stop();
  $("#current-id").textContent = job.id;
  $("#current-link").href = `#/jobs/${job.id}`;
  $("#current").dataset.jobId = job.id;
  renderCurrent(job.state, job.progress, job.stage);
  currentStream = followEvents(job.id, ({ event, data }) => {
    if (event === "progress") renderCurrent(null, data.progress, data.stage, data.message);
    else if (event === "log") logLine(data.message);
    else if (event === "state") {
      renderCurrent(data.state, data.progress, data.stage, data.message);
      logLine(`state: ${data.state}${data.error ? ` (${data.error.code}: ${data.error.message})` : ""}`);
      if (TERMINAL.has(data.state)) {
        refreshRecent();
        showMetrics(job.id);
      }
    }
  }, { onError: showError });
}

// The transcriber's coverage guard: how much detected speech the transcript's words cover.
async function showMetrics(jobId) {
  try {
    const job = await api(jobPath(jobId));
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

async function refreshRecent() {
  if (!getKey()) return;
  try {
    recent.render((await api("v1/jobs?limit=10")).jobs);
  } catch (err) {
    showError(err);
  }
}

function setupDropZone() {
  const zone = $("#drop-zone");
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    addFiles([...e.dataTransfer.files]);
  });
  $("#file").addEventListener("change", () => {
    addFiles([...$("#file").files]);
    $("#file").value = "";
  });
  $("#clear-files").addEventListener("click", () => { uploads.splice(0).forEach((u) => u.li.remove()); });
}

// ---- jobs view ----------------------------------------------------------------------------------------

const list = { cursors: [null], page: 0, next: null, query: "" };
const listRows = new JobRows($("#job-list tbody"), () => loadJobs());

function filtersFromHash(params) {
  $("#filter-state").value = params.get("state") || "";
  $("#filter-type").value = params.get("type") || "";
  const limit = params.get("limit") || "25";
  if (![...$("#filter-limit").options].some((o) => o.value === limit)) {
    $("#filter-limit").appendChild(el("option", {}, limit));
  }
  $("#filter-limit").value = limit;
}

function filterQuery() {
  const params = new URLSearchParams();
  for (const [name, sel] of [["state", "#filter-state"], ["type", "#filter-type"], ["limit", "#filter-limit"]]) {
    if ($(sel).value) params.set(name, $(sel).value);
  }
  return params;
}

function applyFilters() {
  location.hash = `#/jobs?${filterQuery()}`;
}

async function loadJobs() {
  const params = filterQuery();
  const query = params.toString();
  if (query !== list.query) Object.assign(list, { cursors: [null], page: 0, query });
  const cursor = list.cursors[list.page];
  if (cursor) params.set("cursor", cursor);
  try {
    const page = await api(`v1/jobs?${params}`);
    list.next = page.next_cursor;
    listRows.render(page.jobs);
    $("#jobs-empty").hidden = page.jobs.length > 0;
    $("#page-next").disabled = !page.next_cursor;
    $("#page-prev").disabled = list.page === 0;
    $("#page-first").disabled = list.page === 0;
    $("#page-info").textContent = `page ${list.page + 1}`;
  } catch (err) {
    showError(err);
  }
}

function setupJobs() {
  for (const sel of ["#filter-state", "#filter-type", "#filter-limit"]) $(sel).addEventListener("change", applyFilters);
  $("#job-filters").addEventListener("submit", (e) => { e.preventDefault(); applyFilters(); });
  $("#jobs-refresh").addEventListener("click", loadJobs);
  $("#page-next").addEventListener("click", () => {
    if (!list.next) return;
    list.cursors[list.page + 1] = list.next;
    list.page += 1;
    loadJobs();
  });
  $("#page-prev").addEventListener("click", () => { list.page = Math.max(0, list.page - 1); loadJobs(); });
  $("#page-first").addEventListener("click", () => { list.page = 0; loadJobs(); });
}

// ---- job page -----------------------------------------------------------------------------------------

let jobView = null;  // {id, stream, events, job, mediaReady, blobUrls, media, transcriptView, speakers}

function stopJobStream() {
  if (!jobView) return;
  if (jobView.stream) jobView.stream.stop();
  if (jobView.speakers) jobView.speakers.stop();
  if (jobView.transcriptView) jobView.transcriptView.stop();
  for (const url of jobView.blobUrls) URL.revokeObjectURL(url);
  jobView = null;
}

/** Where the player should start (#/jobs/<id>?t=<seconds>, e.g. a search hit), once it has media. */
function seekPlayer(view, t) {
  view.seek = Number.isFinite(t) ? t : null;
  const media = $("#player");
  if (view.seek === null || !media || jobView !== view) return;
  if (media.readyState >= 1) media.currentTime = view.seek;
  else media.addEventListener("loadedmetadata", () => { media.currentTime = view.seek; }, { once: true });
}

async function openJob(id, t) {
  if (jobView && jobView.id === id) {
    seekPlayer(jobView, t);
    return;
  }
  stopJobStream();
  const view = { id, stream: null, events: [], job: null, mediaReady: false, blobUrls: [], seek: Number.isFinite(t) ? t : null };
  jobView = view;
  $("#job-id").textContent = id;
  for (const sel of ["#job-summary", "#job-actions", "#timeline", "#artifacts", "#job-log", "#player-box", "#transcript"]) {
    $(sel).replaceChildren();
  }
  $("#job-error").hidden = true;
  $("#media-section").hidden = true;
  $("#transcript-box").hidden = true;
  $("#speakers-panel").hidden = true;
  $("#local-media").hidden = true;
  try {
    view.job = await api(jobPath(id));
  } catch (err) {
    showError(err);
    return;
  }
  if (jobView !== view) return;
  renderJob(view);
  let refetch = null;
  view.stream = followEvents(id, (e) => {
    view.events.push(e);
    if (e.event === "log") appendJobLog(e);
    else renderTimeline(view);
    if (e.event === "progress") {
      Object.assign(view.job, { progress: e.data.progress, stage: e.data.stage ?? view.job.stage, message: e.data.message ?? "" });
      renderSummary(view);
    }
    if (e.event === "state") {  // the record has what the event does not (artifacts, result, error)
      clearTimeout(refetch);
      refetch = setTimeout(async () => {
        try {
          const job = await api(jobPath(id));
          if (jobView === view) { view.job = job; renderJob(view); }
        } catch (err) {
          if (jobView === view) showError(err);
        }
      }, 100);
    }
  }, { onError: showError });
}

function renderJob(view) {
  renderSummary(view);
  const job = view.job;
  $("#job-actions").replaceChildren(...actionButtons(job, async () => {
    try {
      view.job = await api(jobPath(job.id));
      renderJob(view);
    } catch (err) {
      if (err instanceof ApiError && err.code === "job_not_found") location.hash = "#/jobs";
      else throw err;
    }
  }));
  const problem = $("#job-error");
  problem.hidden = !job.error;
  if (job.error) {
    problem.replaceChildren(el("strong", { class: "error-code" }, job.error.code), ": ", job.error.message,
      job.error.retryable ? " (retryable)" : "");
  }
  $("#artifacts").replaceChildren(...job.artifacts.map((a) =>
    el("li", {}, artifactLinks({ ...job, artifacts: [a] })[0], el("span", { class: "muted" }, ` ${a.content_type}, ${fmtBytes(a.size)}`))));
  if (!job.artifacts.length) $("#artifacts").appendChild(el("li", { class: "muted" }, "none yet"));
  renderTimeline(view);
  if (job.state === "succeeded" && !view.mediaReady) setupMedia(view);
}

function renderSummary(view) {
  const job = view.job;
  const dl = el("dl", {},
    el("dt", {}, "state"), el("dd", { class: `state state-${job.state}`, id: "job-state" }, job.state),
    el("dt", {}, "type"), el("dd", {}, job.type),
    el("dt", {}, "progress"), el("dd", {}, ...progressCell({ ...job, state: "running" })),
    el("dt", {}, "ETA"), el("dd", { id: "job-eta" }, fmtEta(etaSeconds(job))),
    el("dt", {}, "attempt"), el("dd", {}, `${job.attempt} of ${job.max_attempts}`),
    el("dt", {}, "queue"), el("dd", {}, job.queue || "—"),
    el("dt", {}, "worker"), el("dd", {}, job.worker || "—"),
    el("dt", {}, "created"), el("dd", {}, fmtTime(job.created_at)),
    el("dt", {}, "started"), el("dd", {}, fmtTime(job.started_at)),
    el("dt", {}, "finished"), el("dd", {}, fmtTime(job.finished_at)),
    el("dt", {}, "input"), el("dd", {}, job.input.media_id || job.input.path || job.input.url || "—"),
  );
  if (job.parent_id) dl.append(el("dt", {}, "parent"), el("dd", {}, el("a", { href: `#/jobs/${job.parent_id}` }, job.parent_id)));
  if (job.children.length) {
    dl.append(el("dt", {}, "steps"), el("dd", {}, job.children.map((c) => [el("a", { href: `#/jobs/${c}` }, c), " "])));
  }
  $("#job-summary").replaceChildren(dl);
}

/** Stages from the event stream: a new entry whenever the state or the stage changes; its duration
 * runs to the next entry (the event ids are Redis stream ids, i.e. times in ms). */
function timelineOf(events) {
  const entries = [];
  let state = null;
  for (const e of events) {
    if (e.event !== "state" && e.event !== "progress") continue;
    if (e.event === "state") state = e.data.state;
    const stage = e.data.stage || "";
    const label = e.event === "state" && (TERMINAL.has(state) || state === "queued" || !stage) ? state : `${state || "running"} · ${stage}`;
    const at = eventTime(e.id);
    const last = entries[entries.length - 1];
    if (last && last.label === label) continue;
    entries.push({ label, at, state });
  }
  return entries;
}

function renderTimeline(view) {
  const entries = timelineOf(view.events);
  const now = Date.now();
  $("#timeline").replaceChildren(...entries.map((entry, i) => {
    const next = entries[i + 1];
    const ended = TERMINAL.has(entry.state) && !next;
    const seconds = entry.at ? ((next ? next.at : ended ? entry.at : new Date(now)) - entry.at) / 1000 : 0;
    return el("li", { class: `stage-entry state-${entry.state || "running"}`, dataset: { label: entry.label } },
      el("span", { class: "stage-label" }, entry.label),
      el("time", { datetime: entry.at ? entry.at.toISOString() : "" }, entry.at ? entry.at.toLocaleTimeString() : ""),
      el("span", { class: "duration" }, ended ? "" : next ? fmtSecs(seconds) : `${fmtSecs(seconds)} so far`));
  }));
}

function appendJobLog(e) {
  const at = eventTime(e.id);
  $("#job-log").appendChild(el("li", { class: `log-${e.data.level || "info"}` },
    el("time", {}, at ? at.toLocaleTimeString() : ""), " ", e.data.message));
}

async function setupMedia(view) {
  view.mediaReady = true;
  const job = view.job;
  const byName = new Map(job.artifacts.map((a) => [a.name, a]));
  const playable = job.artifacts.find((a) => /^(video|audio)\//.test(a.content_type));
  const captions = byName.get("captions.vtt");
  const transcriptArtifact = byName.get("transcript.json");
  if (!playable && !captions && !transcriptArtifact) return;
  $("#media-section").hidden = false;
  let transcript = null;
  try {
    if (transcriptArtifact) transcript = JSON.parse(await artifactText(transcriptArtifact));
  } catch (err) {
    showError(err);
  }
  if (jobView !== view) return;

  // A caption job's output.mp4 has them burned into the picture (unless mode is soft): the track is
  // there to switch on, but off by default so they do not show twice.
  const burned = job.type === "caption" && (job.options.mode ?? "burn") !== "soft" && Boolean(playable);
  const attach = async (src, isVideo, note) => {
    // captions show only on a <video>: an audio file with captions plays in one too
    const media = el(isVideo || captions ? "video" : "audio", { controls: true, preload: "metadata", id: "player", class: "player" });
    if (captions) await attachCaptions(view, media, captions, transcript, !burned);
    media.src = src;
    if (jobView !== view) return;
    $("#player-box").replaceChildren(media);
    seekPlayer(view, view.seek);
    $("#media-note").textContent = note;
    if (transcript) showTranscript(view, transcript, media);
  };

  if (playable) {
    const url = await artifactBlobUrl(playable);
    view.blobUrls.push(url);
    await attach(url, playable.content_type.startsWith("video/"),
      `playing the artifact ${playable.name}${burned && captions ? " (captions burned in; the CC track is off)" : ""}`);
    return;
  }
  const local = localMedia.get(job.input.media_id);
  if (local) {
    const url = URL.createObjectURL(local);
    view.blobUrls.push(url);
    await attach(url, !local.type.startsWith("audio/"), `playing ${local.name} from this browser (the upload of this tab)`);
    return;
  }
  if (job.input.media_id) {  // the upload itself, from the server
    try {
      const record = await api(`v1/media/${encodeURIComponent(job.input.media_id)}`);
      // what the probe found, not only the declared type (a browser may send none: octet-stream)
      const kinds = new Set((record.streams || []).map((st) => st.kind));
      if (/^(video|audio)\//.test(record.content_type || "") || kinds.has("audio") || kinds.has("video")) {
        const url = await mediaBlobUrl(job.input.media_id);
        view.blobUrls.push(url);
        await attach(url, kinds.has("video") || (record.content_type || "").startsWith("video/"), `playing the upload ${record.filename}`);
        return;
      }
    } catch { /* deleted or not media: the operator can pick the file */ }
  }
  $("#media-note").textContent = "The server keeps no playable copy for this job: pick the input file to play it here.";
  $("#local-media").hidden = false;
  $("#local-file").onchange = async () => {
    const file = $("#local-file").files[0];
    if (!file) return;
    const url = URL.createObjectURL(file);
    view.blobUrls.push(url);
    await attach(url, !file.type.startsWith("audio/"), `playing ${file.name} from this computer`);
  };
  if (transcript) showTranscript(view, transcript, null);
}

/** The WebVTT captions as the player's <track> (replacing the one it had: after a rename). */
async function attachCaptions(view, media, captions, transcript, on) {
  try {
    const vtt = await artifactBlobUrl(captions);
    view.blobUrls.push(vtt);
    const old = media.querySelector("track");
    const track = el("track", { kind: "captions", src: vtt, srclang: transcript?.language || "en", label: "captions", default: on });
    if (old) old.remove();
    media.appendChild(track);
    if (old) track.track.mode = on ? "showing" : "hidden";  // `default` only counts while the page loads
  } catch (err) {
    showError(err);
  }
}

function showTranscript(view, transcript, media) {
  $("#transcript-box").hidden = false;
  view.media = media;
  if (view.transcriptView) view.transcriptView.stop();
  view.transcriptView = renderTranscript($("#transcript"), transcript, media, $("#transcript-search"), $("#search-count"));
  const job = view.job;
  if (job.type !== "transcribe" || !((job.result || {}).speakers || []).length) return;
  if (view.speakers) view.speakers.stop();
  view.speakers = renderSpeakers(job, transcript, speakerColours(transcript), () => reloadTranscript(view));
}

/** After a relabel job: the record (artifact sizes), the transcript and the captions again; the
 * player keeps its place. */
async function reloadTranscript(view) {
  const job = await api(jobPath(view.id));
  if (jobView !== view) return;
  view.job = job;
  renderJob(view);
  const byName = new Map(job.artifacts.map((a) => [a.name, a]));
  const transcript = JSON.parse(await artifactText(byName.get("transcript.json")));
  if (jobView !== view) return;
  const captions = byName.get("captions.vtt");
  const track = view.media && view.media.querySelector("track");
  if (captions && track) await attachCaptions(view, view.media, captions, transcript, track.track.mode === "showing");
  showTranscript(view, transcript, view.media);
}

// ---- queues view --------------------------------------------------------------------------------------

async function loadQueues() {
  refreshStatus();
  try {
    const data = await api("v1/queues");
    $("#queue-table tbody").replaceChildren(...data.queues.map((q) =>
      el("tr", { dataset: { queue: q.name } },
        el("th", { scope: "row" }, q.name.replace(/^mediaflow:queue:/, "")),
        ...[q.queued, q.running, q.deferred, q.succeeded, q.failed, q.workers.length].map((n) => el("td", { class: "num" }, String(n))),
        el("td", { class: "throughput" }, sparkline(q.throughput || [])))));
    $("#queues-window").textContent = `succeeded and failed: the last ${fmtSecs(data.window_s)}`;
    const workers = data.queues.flatMap((q) => q.workers);
    $("#workers-empty").hidden = workers.length > 0;
    $("#worker-table tbody").replaceChildren(...workers.map((w) =>
      el("tr", { dataset: { workerId: w.id }, class: w.draining ? "draining" : "" },
        el("td", {}, w.host), el("td", { class: "num" }, String(w.pid)),
        el("td", {}, w.queue.replace(/^mediaflow:queue:/, "")), el("td", {}, w.model || "—"), el("td", {}, w.device || "—"),
        el("td", { class: "num" }, String(w.busy)),
        el("td", {}, w.jobs.map((j) => [el("a", { href: `#/jobs/${j}` }, j), " "])),
        el("td", { class: "num heartbeat" }, `${w.heartbeat_age_s.toFixed(1)} s ago${w.draining ? " (draining)" : ""}`),
        el("td", {}, w.metrics_url ? el("a", { href: w.metrics_url, rel: "noopener" }, "metrics") : "—"))));
  } catch (err) {
    showError(err);
  }
}

// ---- routing -------------------------------------------------------------------------------------------

let currentView = null;

function show(view) {
  currentView = view;
  for (const v of VIEWS) $(`#view-${v}`).hidden = v !== view;
  for (const a of document.querySelectorAll("nav a[data-view]")) {
    const active = a.dataset.view === view || (view === "job" && a.dataset.view === "jobs");
    if (active) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function route() {
  const hash = location.hash.replace(/^#\/?/, "");
  const [path, query = ""] = hash.split("?");
  const parts = path.split("/").filter(Boolean);
  if (!getKey()) {
    show(!parts.length || parts[0] === "upload" ? "upload" : "signin");  // sign in above, then upload
    return;
  }
  if (parts[0] !== "jobs" || !parts[1]) stopJobStream();
  if (parts[0] !== "batches" || !parts[1]) closeBatch();
  const previous = currentView;
  const params = new URLSearchParams(query);
  if (parts[0] === "jobs" && parts[1]) {
    show("job");
    openJob(decodeURIComponent(parts[1]), params.has("t") ? Number(params.get("t")) : null);
  } else if (parts[0] === "jobs") {
    show("jobs");
    filtersFromHash(params);
    loadJobs();
  } else if (parts[0] === "queues") {
    show("queues");
    loadQueues();
  } else if (parts[0] === "compose") {
    show("compose");
    openCompose();
  } else if (parts[0] === "batches") {
    show("batch");
    if (parts[1]) openBatch(decodeURIComponent(parts[1]));
    else listBatches();
  } else if (parts[0] === "search") {
    show("search");
    openSearch(params);
  } else if (parts[0] === "speakers") {
    show("speakers");
    openSpeakers();
  } else {
    show("upload");
    refreshRecent();
  }
  if (previous && previous !== currentView) $("#main").focus({ preventScroll: true });
}

function tick() {
  if (!getKey() || document.hidden) return;
  if (currentView === "jobs" && listRows.live) loadJobs();
  else if (currentView === "upload" && recent.live) refreshRecent();
  else if (currentView === "queues") loadQueues();
  else if (currentView === "job" && jobView && jobView.job && !TERMINAL.has(jobView.job.state)) {
    renderTimeline(jobView);
    $("#job-eta").textContent = fmtEta(etaSeconds(jobView.job));
  }
}

$("#key-form").addEventListener("submit", signIn);
$("#sign-out").addEventListener("click", signOut);
$("#job-form").addEventListener("submit", submitUploads);
$("#refresh").addEventListener("click", refreshRecent);
$("#queues-refresh").addEventListener("click", loadQueues);
setupDropZone();
setupJobs();
setupCompose();
setupBatches();
setupSearch();
window.addEventListener("hashchange", route);
renderKeyState();
route();
refreshStatus();
setInterval(tick, POLL_MS);
setInterval(refreshStatus, 10000);
