// The transcript beside the player: words (or segments) as buttons that seek the media, the current
// word and segment highlighted during playback, one colour per speaker, and a search that filters the
// segments and marks the matches.

const SPEAKER_COLOURS = 8;

function fmt(seconds) {
  const s = Math.max(0, seconds);
  const m = Math.floor(s / 60);
  return `${m}:${(s % 60).toFixed(1).padStart(4, "0")}`;
}

export function renderTranscript(container, transcript, media, searchInput, countOutput) {
  const speakers = new Map();
  const colour = (speaker) => {
    if (!speaker) return null;
    if (!speakers.has(speaker)) speakers.set(speaker, speakers.size % SPEAKER_COLOURS);
    return speakers.get(speaker);
  };
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
      tag.textContent = speaker;
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
      word.title = `${fmt(w.start)}${w.speaker ? ` · ${w.speaker}` : ""}`;
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
  return { highlight };
}
