"""Full-text search over a tenant's transcripts: an inverted index kept in Redis/Valkey itself.

Neither the embedded Valkey of `mediaflow up` nor a stock Redis/Valkey server loads a search module,
but both are the store every gateway replica and worker already shares, so the index lives there too
(keys in keys.py): per tenant and term a sorted set of the segments holding the term, and per
transcript a hash of its segments. The transcriber indexes a transcript when it writes it
(`index_transcript`); deleting or expiring a job removes it (`remove_job`, from retention.py).

Order: newest transcript first (the first time it was indexed), then time in the transcript. Each
transcript gets a number from a per-tenant counter, and each of its segments the score
`segment - number * SLOTS`: scores are unique, ascending in that order, and one transcript's
segments are one score range (removed with one ZREMRANGEBYSCORE per term). A page's cursor is the
last score it returned.

A query is a set of terms, all of which a segment must hold (word order is not checked). The
search walks the smallest of the terms' sets in order and checks each member in the other sets
(ZSCORE, O(1)), stopping at `limit` hits: common terms stop early, and a rare term makes the walk
short. Words that rarely meet would make the walk long: after `WALK_MAX` members the server's own
ZINTER answers the rest (unless the smallest set is huge, when the walk goes on to `EXAMINED_MAX`
members and the page may hold fewer hits than asked, with a cursor to go on).

Terms: runs of letters, marks and digits, case-folded, accents removed (`Café` matches `cafe`); in
Chinese and Japanese, written without spaces, every character is a term.
"""

from __future__ import annotations

import html
import json
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import regex
from redis.asyncio import Redis

from ..errors import InvalidInput
from . import keys
from .model import Job, JobState
from .store import JobStore

SLOTS = 1 << 20  # segments per transcript (later ones are not indexed); scores stay exact below 2**53
MAX_TERMS = 10
MAX_QUERY_CHARS = 200
WALK_MAX = 2_000  # members a multi-word walk reads before ZINTER takes over
INTERSECT_MAX = 100_000  # no ZINTER when the smallest set is larger (its result could be as large)
EXAMINED_MAX = 50_000  # members a page may read without ZINTER (its time bound)
_BATCH = 500  # members read per ZRANGE in the walk
_CHUNK = 1000  # arguments per Redis call inside the scripts (Lua's unpack has a limit)

# A word: letters, marks and digits (`regex` knows Unicode's classes; `re` would split words at the
# vowel signs of Indic scripts); a character of the scripts written without spaces is a word alone.
_UNSPACED = r"\p{Han}\p{Hiragana}\p{Katakana}"
_TOKEN = regex.compile("[" + _UNSPACED + "]|(?:(?![" + _UNSPACED + r"])[\p{L}\p{M}\p{N}])+")
_MARK_START, _MARK_END = "<mark>", "</mark>"


class SegmentLike(Protocol):
    """What a transcript segment offers the index (the transcriber's `Segment` is one)."""

    @property
    def start(self) -> float: ...
    @property
    def end(self) -> float: ...
    @property
    def text(self) -> str: ...
    @property
    def speaker(self) -> str | None: ...


@dataclass(frozen=True)
class Hit:
    job_id: str
    start: float
    end: float
    speaker: str | None
    snippet: str  # the segment's text, HTML-escaped, each matching word in <mark>…</mark>
    media_id: str | None  # the job's input media, when it was uploaded (the console plays it)

    def public(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "start": self.start,
            "end": self.end,
            "speaker": self.speaker,
            "snippet": self.snippet,
            "media_id": self.media_id,
        }


# ---- terms ---------------------------------------------------------------------------------------
def normalize(word: str) -> str:
    """The term of a word: case-folded, accents (combining marks) removed."""
    if word.isascii():  # most words: no marks to remove
        return word.lower()
    decomposed = unicodedata.normalize("NFKD", word.casefold())
    return unicodedata.normalize("NFC", "".join(c for c in decomposed if not unicodedata.combining(c)))


def terms(text: str) -> list[str]:
    """The text's terms, in order (repeats kept)."""
    return [t for t in (normalize(m.group()) for m in _TOKEN.finditer(text)) if t]


def query_terms(query: str) -> list[str]:
    """The distinct terms of a query; InvalidInput `invalid_query` (422) if there are none or too many."""
    if len(query) > MAX_QUERY_CHARS:
        raise InvalidInput(f"the query is longer than {MAX_QUERY_CHARS} characters", code="invalid_query")
    found = list(dict.fromkeys(terms(query)))
    if not found:
        raise InvalidInput("the query has no words to search for (letters or digits)", code="invalid_query")
    if len(found) > MAX_TERMS:
        raise InvalidInput(f"the query has more than {MAX_TERMS} distinct words", code="invalid_query")
    return found


def highlight(text: str, wanted: Iterable[str]) -> str:
    """`text` HTML-escaped, each word whose term is in `wanted` wrapped in <mark>…</mark>."""
    wanted = set(wanted)
    out, at = [], 0
    for m in _TOKEN.finditer(text):
        if normalize(m.group()) in wanted:
            out += [html.escape(text[at : m.start()]), _MARK_START, html.escape(m.group()), _MARK_END]
            at = m.end()
    out.append(html.escape(text[at:]))
    return "".join(out)


# ---- writing -------------------------------------------------------------------------------------
# Index one transcript if its job's record (KEYS[1]) exists: a job deleted meanwhile stays out of the
# index (its deletion removes the record first, then the index). Removes the transcript's previous
# entries first: ZREMRANGEBYSCORE ARGV[2]..ARGV[3] from KEYS[4 .. 3+ARGV[1]] (its old terms), then
# names the job in the tenant's hash KEYS[3] (field ARGV[5] = its number in hex, value ARGV[6]), writes
# its hash KEYS[2] (ARGV[4] field/value arguments follow ARGV[6]), and adds to each new term's set
# KEYS[k] the segments listed in the next ARGV (segment numbers in hex, space-separated): member
# "{number}.{segment}", score ARGV[2] + segment. (Built here, so the client sends one string a term.)
INDEX_SCRIPT = f"""
local function call_chunked(cmd, key, args, from, to)
  for s = from, to, {_CHUNK} do redis.call(cmd, key, unpack(args, s, math.min(s + {_CHUNK} - 1, to))) end
end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local old, low, number = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[5]
for k = 4, 3 + old do redis.call('ZREMRANGEBYSCORE', KEYS[k], ARGV[2], ARGV[3]) end
redis.call('HSET', KEYS[3], number, ARGV[6])
redis.call('DEL', KEYS[2])
local n = tonumber(ARGV[4])
call_chunked('HSET', KEYS[2], ARGV, 7, 6 + n)
local a = 7 + n
for k = 4 + old, #KEYS do
  local entries = {{}}
  for segment in string.gmatch(ARGV[a], '%x+') do
    entries[#entries + 1] = string.format('%d', low + tonumber(segment, 16))  -- exact below 2^53
    entries[#entries + 1] = number .. '.' .. segment
  end
  call_chunked('ZADD', KEYS[k], entries, 1, #entries)
  a = a + 1
end
return 1
"""

# Remove one transcript: its score range ARGV[1]..ARGV[2] from its terms' sets KEYS[3..], its hash
# KEYS[1] and its entry ARGV[3] in the tenant's hash KEYS[2].
REMOVE_SCRIPT = """
for k = 3, #KEYS do redis.call('ZREMRANGEBYSCORE', KEYS[k], ARGV[1], ARGV[2]) end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[3])
return 1
"""

# One page. Walk the smallest of the term sets KEYS[2..] from score ARGV[2] ('-inf' or '(' .. last
# score) in order, keeping members that every other set holds, until ARGV[1] hits. When several sets
# must meet and the walk read ARGV[3] members without filling the page (the words rarely meet), the
# rest comes from ZINTER, the server's own intersection (in C: far faster than checking here), unless
# the smallest set holds more than ARGV[4] members (the result could be huge): then the walk goes
# on up to ARGV[5] members read. Returns {job id, segment, ...} (job ids from the tenant's hash
# KEYS[1]) and where to go on ('' when there is no more).
SEARCH_SCRIPT = f"""
local driver, size = 2, redis.call('ZCARD', KEYS[2])
for k = 3, #KEYS do
  local n = redis.call('ZCARD', KEYS[k])
  if n < size then driver, size = k, n end
end
local limit, from = tonumber(ARGV[1]), ARGV[2]
local intersect = #KEYS > 2 and size <= tonumber(ARGV[4])
local budget = intersect and tonumber(ARGV[3]) or tonumber(ARGV[5])
local hits, read = {{}}, 0
local function add(member, score)
  local number, segment = string.match(member, '^(%x+)%.(%x+)$')
  hits[#hits + 1] = redis.call('HGET', KEYS[1], number) or ''
  hits[#hits + 1] = tonumber(segment, 16)
  from = '(' .. score
  return #hits >= 2 * limit
end
while size > 0 do
  local batch = redis.call('ZRANGE', KEYS[driver], from, '+inf', 'BYSCORE', 'LIMIT', 0, {_BATCH}, 'WITHSCORES')
  for j = 1, #batch, 2 do
    local member, found = batch[j], true
    for k = 2, #KEYS do
      if k ~= driver and not redis.call('ZSCORE', KEYS[k], member) then found = false; break end
    end
    read = read + 1
    if found then
      if add(member, batch[j + 1]) then return {{hits, from}} end
    else
      from = '(' .. batch[j + 1]
    end
    if read >= budget then
      if not intersect then return {{hits, from}} end
      local after = tonumber(string.sub(from, 2))
      local args = {{'ZINTER', #KEYS - 1}}
      for k = 2, #KEYS do args[#args + 1] = KEYS[k] end
      for _, word in ipairs({{'AGGREGATE', 'MIN', 'WITHSCORES'}}) do args[#args + 1] = word end
      local met = redis.call(unpack(args))
      for m = 1, #met, 2 do
        if tonumber(met[m + 1]) > after and add(met[m], met[m + 1]) then return {{hits, from}} end
      end
      return {{hits, ''}}
    end
  end
  if #batch < 2 * {_BATCH} then break end
end
return {{hits, ''}}
"""


def _score_range(number: int) -> tuple[int, int]:
    low = -number * SLOTS
    return low, low + SLOTS - 1


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class SearchIndex:
    """The search index of every tenant, in the store's Redis."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.redis: Redis = store.redis
        self._index = self.redis.register_script(INDEX_SCRIPT)
        self._remove = self.redis.register_script(REMOVE_SCRIPT)
        self._search = self.redis.register_script(SEARCH_SCRIPT)

    async def index_transcript(self, tenant: str, job_id: str, segments: Sequence[SegmentLike]) -> bool:
        """Index (or index again) the transcript of a job; False if the job no longer exists. It
        keeps its place in the order when indexed again."""
        doc = keys.search_doc(job_id)
        number_raw, old_terms = await self.redis.hmget(doc, ["number", "terms"])  # type: ignore[misc]  # redis-py: sync|async type
        number = int(number_raw) if number_raw else await self.redis.incr(keys.search_counter(tenant))
        low, high = _score_range(number)
        fields: list[str | int] = ["tenant", tenant, "number", number]
        postings: dict[str, list[str]] = {}  # term -> the segments holding it (hex)
        for i, segment in enumerate(segments[:SLOTS]):
            speaker = getattr(segment, "speaker_name", None) or segment.speaker  # a named voice shows its name
            fields += [i, json.dumps([round(segment.start, 3), round(segment.end, 3), speaker, segment.text])]
            for term in dict.fromkeys(terms(segment.text)):
                postings.setdefault(term, []).append(f"{i:x}")
        fields += ["terms", " ".join(postings)]
        old = _text(old_terms).split() if old_terms else []
        args = [len(old), low, high, len(fields), f"{number:x}", job_id, *fields]
        args += [" ".join(segments_of_term) for segments_of_term in postings.values()]
        term_keys = [keys.search_term(tenant, t) for t in [*old, *postings]]
        script_keys = [keys.job(job_id), doc, keys.search_jobs(tenant), *term_keys]
        return bool(await self._index(keys=script_keys, args=args))

    async def remove_job(self, job_id: str) -> bool:
        """Take a job's transcript out of the index; False if it was not there."""
        doc = keys.search_doc(job_id)
        tenant_raw, number, old_terms = await self.redis.hmget(doc, ["tenant", "number", "terms"])  # type: ignore[misc]  # redis-py: sync|async type
        if tenant_raw is None or number is None:
            return False
        tenant = _text(tenant_raw)
        low, high = _score_range(int(number))
        term_keys = [keys.search_term(tenant, t) for t in _text(old_terms or b"").split()]
        await self._remove(keys=[doc, keys.search_jobs(tenant), *term_keys], args=[low, high, f"{int(number):x}"])
        return True

    async def search(
        self, tenant: str, query: str, *, limit: int = 20, cursor: str | None = None
    ) -> tuple[list[Hit], str | None]:
        """The tenant's segments holding every term of `query`, newest transcript first, then by
        time; and the cursor of the next page (None: no more). Only succeeded jobs are answered."""
        wanted = query_terms(query)
        start = "-inf"
        if cursor is not None:
            if not re.fullmatch(r"-?[0-9]{1,17}", cursor):
                raise InvalidInput("cursor must be the next_cursor of a previous page", code="invalid_cursor")
            start = f"({cursor}"
        script_keys = [keys.search_jobs(tenant), *(keys.search_term(tenant, t) for t in wanted)]
        found, go_on = await self._search(keys=script_keys, args=[limit, start, WALK_MAX, INTERSECT_MAX, EXAMINED_MAX])
        next_cursor = _text(go_on).removeprefix("(") or None
        places = [(_text(job_id), int(i)) for job_id, i in zip(found[0::2], found[1::2], strict=True)]
        if not places:
            return [], next_cursor
        segments_of: dict[str, list[int]] = {}
        for job_id, i in places:
            segments_of.setdefault(job_id, []).append(i)
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, wanted_segments in segments_of.items():
                pipe.hmget(keys.search_doc(job_id), wanted_segments)
            pipe.mget([keys.job(job_id) for job_id in segments_of])
            *segment_rows, records = await pipe.execute()
        rows = {
            (job_id, i): row
            for (job_id, wanted_segments), found_rows in zip(segments_of.items(), segment_rows, strict=True)
            for i, row in zip(wanted_segments, found_rows, strict=True)
        }
        jobs = {job.id: job for job in (Job.from_stored(r) for r in records if r is not None)}
        for gone in (j for j in segments_of if j not in jobs):  # deleted, its index not yet (or not) removed
            await self.remove_job(gone)
        hits = []
        for job_id, i in places:
            job, row = jobs.get(job_id), rows[job_id, i]
            if job is None or job.tenant != tenant or job.state != JobState.succeeded or row is None:
                continue  # an attempt that did not succeed (yet): its transcript is not published
            seg_start, seg_end, speaker, text = json.loads(row)
            media_id = job.input.get("media_id") or None
            hits.append(Hit(job_id, float(seg_start), float(seg_end), speaker, highlight(text, wanted), media_id))
        return hits, next_cursor
