// The transcript beside the player: words (or segments) as buttons that seek the media, the current
// word and segment highlighted during playback, one colour per speaker (its name when it has one),
// and a search that filters the segments and marks the matches.

const SPEAKER_COLOURS = 8;

/** One colour index per speaker label, in the order the speakers first appear. Keyed by label, not
 * name: labels never change, so a rename keeps the colours. */
export function speakerColours(transcript) {
  const colours = new Map();
  const add = (label) => { if (label && !colours.has(label)) colours.set(label, colours.size % SPEAKER_COLOURS); };
  for (const seg of transcript.segments || []) {
    add(seg.speaker);
    for (const w of seg.words || []) add(w.speaker);
  }
  for (const v of transcript.voices || []) add(v.label);
  return colours;
}

/** The tooltip of a speaker's tag: its label, and how sure the match was (a name given by hand has none). */
function speakerTitle(label, voice) {
  if (!voice || !voice.name) return label;
  const how = typeof voice.similarity === "number" ? `matched an enrolled voice, similarity ${voice.similarity.toFixed(2)}` : "named by hand";
  return `${label}: ${voice.name} (${how})`;
}

function fmt(seconds) {
  const s = Math.max(0, seconds);
  const m = Math.floor(s / 60);
  return `${m}:${(s % 60).toFixed(1).padStart(4, "0")}`;
}

export function renderTranscript(container, transcript, media, searchInput, countOutput) {
  const colours = speakerColours(transcript);
  const colour = (speaker) => colours.get(speaker) ?? null;
  const voices = new Map((transcript.voices || []).map((v) => [v.label, v]));
  const nameOf = (label) => voices.get(label)?.name || label;
  const segments = [];  // {el, start, end, words: [{el, start, end, text}]}
  const nodes = [];
  for (const seg of transcript.segments || []) {
    const block = document.createElement("p");
    block.className = "segment";
    block.dataset.start = seg.start;
    const speaker = seg.speaker || (seg.words || []).find((w) => w.speaker)?.speaker || null;
    const time = document.createElement("button");
    time.type = "button";
    time.className = "seg-time";
    time.textContent = fmt(seg.start);
    time.setAttribute("aria-label", `play from ${fmt(seg.start)}`);
    time.addEventListener("click", () => seek(seg.start));
    block.appendChild(time);
    if (speaker) {
      const tag = document.createElement("span");
      tag.className = `speaker speaker-${colour(speaker)}`;
      tag.textContent = seg.speaker_name || nameOf(speaker);
      tag.title = speakerTitle(speaker, voices.get(speaker) || (seg.speaker_name ? { name: seg.speaker_name } : null));
      tag.dataset.label = speaker;
      block.appendChild(tag);
      block.classList.add(`speaker-${colour(speaker)}`);
    }
    const entry = { el: block, start: seg.start, end: seg.end, words: [], text: seg.text || "" };
    const words = seg.words && seg.words.length ? seg.words : [{ text: seg.text, start: seg.start, end: seg.end }];
    for (const w of words) {
      const word = document.createElement("button");
      word.type = "button";
      word.className = "word";
      if (w.speaker && w.speaker !== speaker) word.classList.add(`speaker-${colour(w.speaker)}`);
      word.textContent = w.text.trim();
      word.dataset.start = w.start;
      word.dataset.end = w.end;
      word.title = `${fmt(w.start)}${w.speaker ? ` · ${nameOf(w.speaker)}` : ""}`;
      word.addEventListener("click", () => seek(w.start));
      block.appendChild(word);
      block.appendChild(document.createTextNode(" "));
      entry.words.push({ el: word, start: w.start, end: w.end, text: word.textContent });
    }
    segments.push(entry);
    nodes.push(block);
  }
  container.replaceChildren(...nodes);

  function seek(t) {
    if (!media) return;
    media.currentTime = t + 0.001;
    highlight();
  }

  let currentWord = null;
  let currentSeg = null;
  function highlight() {
    if (!media) return;
    const t = media.currentTime;
    const seg = segments.find((s) => t >= s.start && t < s.end) || null;
    const word = seg ? seg.words.find((w) => t >= w.start && t < w.end) || null : null;
    if (seg !== currentSeg) {
      if (currentSeg) currentSeg.el.classList.remove("current");
      if (seg) seg.el.classList.add("current");
      currentSeg = seg;
    }
    if (word !== currentWord) {
      if (currentWord) currentWord.el.classList.remove("current");
      if (word) {
        word.el.classList.add("current");
        if (!media.paused) word.el.scrollIntoView({ block: "nearest" });
      }
      currentWord = word;
    }
  }
  if (media) {
    media.addEventListener("timeupdate", highlight);
    media.addEventListener("seeked", highlight);
  }
  highlight();

  function search() {
    const query = searchInput.value.trim().toLowerCase();
    let hits = 0;
    for (const seg of segments) {
      let segHit = false;
      for (const w of seg.words) {
        const hit = Boolean(query) && w.text.toLowerCase().includes(query);
        w.el.classList.toggle("match", hit);
        if (hit) { hits += 1; segHit = true; }
      }
      if (query && !segHit && seg.text.toLowerCase().includes(query)) segHit = true;
      seg.el.hidden = Boolean(query) && !segHit;
    }
    countOutput.textContent = query ? `${hits} match${hits === 1 ? "" : "es"}` : "";
  }
  searchInput.value = "";
  searchInput.oninput = search;
  search();
  return {
    highlight,
    /** Unhooks it from the player (before the transcript is rendered again, e.g. after a rename). */
    stop() {
      if (!media) return;
      media.removeEventListener("timeupdate", highlight);
      media.removeEventListener("seeked", highlight);
    },
  };
}
