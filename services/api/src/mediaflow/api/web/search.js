// Transcript search (#/search?q=): the header's search box, GET /v1/search, and a list of hits; a hit
// opens its job's page with the player at the segment (#/jobs/<id>?t=<start>).
import { api } from "./api.js";
import { $, el, showError } from "./ui.js";

let shown = { q: null, next: null };
const filenames = new Map();  // media id -> Promise of its filename (what a hit came from)

function filenameOf(mediaId) {
  if (!filenames.has(mediaId)) {
    filenames.set(mediaId, api(`v1/media/${encodeURIComponent(mediaId)}`).then((m) => m.filename).catch(() => null));
  }
  return filenames.get(mediaId);
}

const clock = (s) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, "0")}`;

/** The server's snippet is HTML-escaped text with <mark> around the matches: rebuilt as text nodes and
 * <mark> elements, so nothing else in it can ever become markup. */
function snippet(html) {
  const decode = (text) => {
    const area = document.createElement("textarea");  // decodes entities, runs nothing
    area.innerHTML = text;
    return area.value;
  };
  const out = [];
  let marked = false;
  for (const part of html.split(/(<mark>|<\/mark>)/)) {
    if (part === "<mark>") marked = true;
    else if (part === "</mark>") marked = false;
    else if (part) out.push(marked ? el("mark", {}, decode(part)) : decode(part));
  }
  return el("span", { class: "snippet" }, out);
}

function hitItem(hit) {
  const t = Math.round(hit.start * 100) / 100;
  const source = el("span", { class: "muted hit-job" }, ` ${hit.job_id}`);
  if (hit.media_id) filenameOf(hit.media_id).then((name) => { if (name) source.textContent = ` ${name} · ${hit.job_id}`; });
  return el("li", { class: "hit", dataset: { jobId: hit.job_id, start: String(hit.start) } },
    el("a", { href: `#/jobs/${hit.job_id}?t=${t}`, class: "hit-link" },
      el("span", { class: "hit-time" }, `${clock(hit.start)}–${clock(hit.end)}`),
      hit.speaker ? el("span", { class: "speaker" }, hit.speaker) : null,
      snippet(hit.snippet)),
    source);
}

async function load(q, cursor) {
  const params = new URLSearchParams({ q, limit: "25" });
  if (cursor) params.set("cursor", cursor);
  const page = await api(`v1/search?${params}`);
  if (shown.q !== q) return;  // a newer search replaced this one
  $("#search-hits").append(...page.hits.map(hitItem));
  shown.next = page.next_cursor;
  $("#search-more").hidden = !page.next_cursor;
  const n = $("#search-hits").children.length;
  $("#search-summary").textContent = `${n}${page.next_cursor ? "+" : ""} ${n === 1 ? "match" : "matches"} for “${q}”`;
}

export async function openSearch(params) {
  const q = (params.get("q") || "").trim();
  $("#search-q").value = q;
  if (q === shown.q) return;
  shown = { q, next: null };
  $("#search-hits").replaceChildren();
  $("#search-more").hidden = true;
  $("#search-summary").textContent = q ? "searching…" : "Type words to find in the transcripts.";
  if (!q) return;
  try {
    await load(q, null);
  } catch (err) {
    $("#search-summary").textContent = "";
    showError(err);
  }
}

export function setupSearch() {
  $("#search-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const q = $("#search-q").value.trim();
    shown.q = null;  // the same words again search again (new transcripts may match)
    const hash = `#/search?${new URLSearchParams({ q })}`;
    if (location.hash === hash) openSearch(new URLSearchParams({ q }));
    else location.hash = hash;
  });
  $("#search-more").addEventListener("click", () => {
    if (shown.next) load(shown.q, shown.next).catch(showError);
  });
}
