// Speaker names: the job page's Speakers panel (rename a diarized transcript's speakers, optionally
// enrolling their voices: PATCH /v1/jobs/{id}/speakers starts a `relabel` job, followed here until it
// ends) and the #/speakers view (the tenant's enrolled voices, GET/DELETE /v1/speakers).
import { api, TERMINAL, followEvents, jobPath } from "./api.js";
import { $, confirmTwice, el, fmtSecs, fmtTime, showError } from "./ui.js";

// ---- the job page's panel ---------------------------------------------------------------------------

/** The rows of the panel: the transcript's voices, else the job's speaker labels (no seconds then). */
function voicesOf(job, transcript) {
  if (transcript.voices && transcript.voices.length) return transcript.voices;
  return ((job.result || {}).speakers || []).map((label) => ({ label, name: null, similarity: null, seconds: null }));
}

function showProblem(text) {
  const problem = $("#speakers-problem");
  problem.hidden = !text;
  problem.textContent = text || "";
}

/**
 * Fill the Speakers panel of a diarized transcribe job. `colours` maps labels to the transcript's
 * colour indices; `reload()` is awaited after a relabel job succeeded (it re-reads the transcript and
 * the captions, then calls this again). Returns a stop() for the relabel job being followed.
 */
export function renderSpeakers(job, transcript, colours, reload) {
  const voices = voicesOf(job, transcript);
  const panel = $("#speakers-panel");
  panel.hidden = !voices.length;
  $("#speakers-table tbody").replaceChildren(...voices.map((v) => {
    const id = `speaker-name-${v.label}`;
    const matched = v.name && typeof v.similarity === "number" ? `matched, similarity ${v.similarity.toFixed(2)}` : "";
    return el("tr", { dataset: { label: v.label } },
      el("td", {},
        el("span", { class: `swatch speaker-${colours.get(v.label) ?? 0}`, "aria-hidden": "true" }),
        el("label", { for: id }, v.label)),
      el("td", {}, el("input", {
        id, type: "text", value: v.name || "", maxlength: 100, autocomplete: "off", placeholder: "no name",
        dataset: { label: v.label, name: v.name || "" }, title: matched || null,
      })),
      el("td", { class: "num" }, typeof v.seconds === "number" ? fmtSecs(v.seconds) : "—"));
  }));
  $("#speakers-enroll").disabled = !(transcript.voices && transcript.voices.length);  // needs voice prints
  showProblem(null);

  let stream = null;
  $("#speakers-form").onsubmit = async (event) => {
    event.preventDefault();
    showProblem(null);
    const names = {};
    for (const input of document.querySelectorAll("#speakers-table input[data-label]")) {
      const name = input.value.trim();
      if (name !== input.dataset.name) names[input.dataset.label] = name || null;  // empty drops a name
    }
    if (!Object.keys(names).length) {
      $("#speakers-status").textContent = "no name changed";
      return;
    }
    const button = $("#speakers-rename");
    button.disabled = true;
    try {
      const answer = await api(`${jobPath(job.id)}/speakers`, {
        method: "PATCH", json: { names, enroll: $("#speakers-enroll").checked },
      });
      const enrolled = answer.enrolled.map((s) => s.name);
      const relabel = answer.job;
      $("#speakers-status").replaceChildren("renaming: job ", el("a", { href: `#/jobs/${relabel.id}` }, relabel.id),
        enrolled.length ? ` (enrolled ${enrolled.join(", ")})` : "");
      await new Promise((resolve, reject) => {
        stream = followEvents(relabel.id, ({ event, data }) => {
          if (event !== "state" || !TERMINAL.has(data.state)) return;
          if (data.state === "succeeded") resolve();
          else reject(new Error(data.error ? `${data.error.code}: ${data.error.message}` : `relabel job ${data.state}`));
        }, { onError: reject });
      });
      await reload();  // the transcript, the captions and this panel, with the new names
      $("#speakers-status").textContent = `renamed${enrolled.length ? `; enrolled ${enrolled.join(", ")}` : ""}`;
    } catch (err) {
      $("#speakers-status").textContent = "";
      showProblem(err.message || String(err));  // an ApiError reads `code: detail`
    } finally {
      button.disabled = false;
      if (stream) stream.stop();
    }
  };
  return { stop() { if (stream) stream.stop(); } };
}

// ---- #/speakers ---------------------------------------------------------------------------------------

function source(voice) {
  const s = voice.source || {};
  if (s.job_id) return [el("a", { href: `#/jobs/${s.job_id}` }, s.job_id), ` ${s.speaker || ""}`];
  if (s.media_id) return `clip ${s.media_id}`;
  return "—";
}

function deleteButton(voice) {
  const button = el("button", { type: "button", class: "delete", "aria-label": `Delete ${voice.name} (${voice.id})` }, "Delete");
  confirmTwice(button, async () => {
    button.disabled = true;
    try {
      await api(`v1/speakers/${encodeURIComponent(voice.id)}`, { method: "DELETE" });
      await openSpeakers();
      $("#speaker-list").focus();
    } catch (err) {
      showError(err);
      button.disabled = false;
    }
  });
  return button;
}

export async function openSpeakers() {
  try {
    const { speakers } = await api("v1/speakers");
    $("#speakers-empty").hidden = speakers.length > 0;
    $("#speaker-list tbody").replaceChildren(...speakers.map((v) =>
      el("tr", { dataset: { speakerId: v.id, state: v.state } },
        el("td", {}, v.name),
        el("td", { class: `state state-${v.state === "ready" ? "succeeded" : v.state === "failed" ? "failed" : "running"}` },
          v.state, v.error ? el("span", { class: "error-code" }, ` ${v.error.code}`) : null),
        el("td", { class: "num" }, fmtSecs(v.seconds)),
        el("td", {}, source(v)),
        el("td", {}, fmtTime(v.created_at)),
        el("td", {}, deleteButton(v)))));
  } catch (err) {
    showError(err);
  }
}
