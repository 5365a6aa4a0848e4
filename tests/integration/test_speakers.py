"""Speaker names across files, through the REST API on a real Valkey with the real model (Whisper
tiny.en, segmentation-3.0 + CAM++) on real media: pyannote_sample.wav (Diane and Sheila on the phone)
cut at 15 s into two files. Diane is enrolled from the first file's transcript and named in the
second; Sheila is named there by hand (captions rewritten, no ASR), enrolled on the way, and both
are recognised in a new transcription; a clip enrolls a voice; errors have codes; tenants are apart."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import ALICE, BOB, assert_problem, running_gateway, upload, wait_terminal
from job_support import in_process_worker

from mediaflow.common.jobs import keys
from mediaflow.common.jobs.model import JobType
from mediaflow.transcriber import jobs as transcriber_jobs
from mediaflow.transcriber import speakers as transcriber_speakers
from mediaflow.transcriber.diarize import diarization_models
from mediaflow.transcriber.model import get_models

OPTIONS = {
    "diarize": True,
    "num_speakers": 2,
    "summary": False,
    "formats": ["srt", "vtt", "json", "txt"],
    "captions": {"speaker_labels": True},
}


def cut(src: Path, dst: Path, start: float, end: float) -> Path:
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(src),
            "-ss",
            str(start),
            "-to",
            str(end),
            "-c:a",
            "pcm_s16le",
            str(dst),
        ],
        check=True,
    )
    return dst


async def transcribe(client: httpx.AsyncClient, path: Path, headers: dict[str, str] = ALICE) -> dict[str, Any]:
    media = (await upload(client, path, headers)).json()
    body = {"type": "transcribe", "input": {"media_id": media["id"]}, "options": OPTIONS}
    response = await client.post("/v1/jobs", json=body, headers=headers)
    assert response.status_code == 202, response.text
    return response.json()


async def artifact(client: httpx.AsyncClient, job_id: str, name: str, headers: dict[str, str] = ALICE) -> str:
    response = await client.get(f"/v1/jobs/{job_id}/artifacts/{name}", headers=headers)
    assert response.status_code == 200, response.text
    return response.text


def reference(media: Path) -> dict[str, list[tuple[float, float]]]:
    """Who speaks when in pyannote_sample.wav (its RTTM; speaker90 is Diane, speaker91 Sheila)."""
    names = {"speaker90": "Diane", "speaker91": "Sheila"}
    turns: dict[str, list[tuple[float, float]]] = {}
    for line in (media / "pyannote_sample.rttm").read_text().splitlines():
        f = line.split()
        turns.setdefault(names[f[7]], []).append((float(f[3]), float(f[3]) + float(f[4])))
    return turns


def label_of(transcript: dict[str, Any], turns: list[tuple[float, float]], offset: float) -> str:
    """The diarized speaker that overlaps a reference speaker's turns most (`offset`: where the file
    was cut from the sample): scored on who spoke when, not on the ASR's words."""
    overlap: dict[str, float] = {}
    for t in transcript["diarization"]:
        for start, end in turns:
            both = min(t["end"], end - offset) - max(t["start"], start - offset)
            overlap[t["speaker"]] = overlap.get(t["speaker"], 0.0) + max(0.0, both)
    return max(overlap, key=overlap.__getitem__)


async def wait_speaker(client: httpx.AsyncClient, speaker_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        speaker = (await client.get(f"/v1/speakers/{speaker_id}", headers=ALICE)).json()
        if speaker["state"] != "pending":
            return speaker
        assert asyncio.get_running_loop().time() < deadline, speaker
        await asyncio.sleep(0.1)


@pytest.fixture
async def stack(redis, settings):
    cfg = settings.model_copy(update={"compositor_grpc": "127.0.0.1:1"})
    handlers = {
        JobType.transcribe: transcriber_jobs.transcribe,
        JobType.enroll: transcriber_speakers.enroll,
        JobType.relabel: transcriber_speakers.relabel,
    }
    # loaded before the gateway serves: a worker in the test's own loop would load them in that loop
    await asyncio.to_thread(get_models, cfg)
    await asyncio.to_thread(diarization_models)
    async with (
        running_gateway(cfg) as base,
        in_process_worker(cfg, handlers, keys.TRANSCRIBE_QUEUE),
        httpx.AsyncClient(base_url=base, timeout=120) as client,
    ):
        yield client


async def test_speakers_named_across_files_renamed_and_enrolled_from_clips(stack, media, tmp_path):
    client = stack
    sample = media / "pyannote_sample.wav"
    first, second = cut(sample, tmp_path / "first.wav", 0, 15), cut(sample, tmp_path / "second.wav", 15, 30)

    # 1. The first file: Diane introduces herself; enroll her from the finished transcript.
    job_a = await transcribe(client, first)
    early = {"name": "Diane", "job_id": job_a["id"], "speaker": "SPEAKER_00"}
    assert_problem(await client.post("/v1/speakers", json=early, headers=ALICE), 409, "job_not_finished")
    job_a = await wait_terminal(client, job_a["id"], timeout=240)
    assert job_a["state"] == "succeeded", job_a
    transcript_a = json.loads(await artifact(client, job_a["id"], "transcript.json"))
    ref = reference(media)
    diane_a = label_of(transcript_a, ref["Diane"], 0.0)
    prints = json.loads(await artifact(client, job_a["id"], "speakers.json"))["speakers"]
    assert {p["label"] for p in prints} == set(transcript_a["speakers"]) and len(prints) == 2
    assert all(len(p["embedding"]) == 192 and p["seconds"] > 0 and p["name"] is None for p in prints)
    enrolled = await client.post(
        "/v1/speakers", json={"name": "Diane", "job_id": job_a["id"], "speaker": diane_a}, headers=ALICE
    )
    assert enrolled.status_code == 201, enrolled.text
    diane = enrolled.json()
    assert diane["state"] == "ready" and diane["name"] == "Diane" and "embedding" not in diane
    assert enrolled.headers["location"] == f"/v1/speakers/{diane['id']}"

    # 2. The second file: Diane is named, with her similarity; Sheila (not enrolled) is not.
    job_b = await wait_terminal(client, (await transcribe(client, second))["id"], timeout=240)
    assert job_b["state"] == "succeeded", job_b
    transcript_b = json.loads(await artifact(client, job_b["id"], "transcript.json"))
    diane_b, sheila_b = label_of(transcript_b, ref["Diane"], 15.0), label_of(transcript_b, ref["Sheila"], 15.0)
    assert diane_b != sheila_b
    voices = {v["label"]: v for v in transcript_b["voices"]}
    assert voices[diane_b]["name"] == "Diane" and voices[diane_b]["speaker_id"] == diane["id"]
    assert voices[diane_b]["similarity"] >= transcriber_speakers.MATCH_THRESHOLD
    assert voices[sheila_b]["name"] is None and voices[sheila_b]["similarity"] is None
    assert all(s["speaker_name"] == ("Diane" if s["speaker"] == diane_b else None) for s in transcript_b["segments"])
    assert "Diane:" in await artifact(client, job_b["id"], "captions.srt")
    assert "<v Diane>" in await artifact(client, job_b["id"], "captions.vtt")
    assert f"{sheila_b}:" in await artifact(client, job_b["id"], "transcript.txt")

    # 3. Rename Sheila by hand (and enroll her): a relabel job rewrites the captions, no ASR.
    renamed = await client.patch(
        f"/v1/jobs/{job_b['id']}/speakers", json={"names": {sheila_b: "Sheila"}, "enroll": True}, headers=ALICE
    )
    assert renamed.status_code == 202, renamed.text
    relabel, sheila = renamed.json()["job"], renamed.json()["enrolled"][0]
    assert relabel["type"] == "relabel" and renamed.headers["location"] == f"/v1/jobs/{relabel['id']}"
    assert sheila["name"] == "Sheila" and sheila["state"] == "ready"
    assert sheila["source"] == {"job_id": job_b["id"], "speaker": sheila_b}
    relabel = await wait_terminal(client, relabel["id"], timeout=60)
    assert relabel["state"] == "succeeded", relabel
    assert relabel["result"]["rewritten"] == [
        "captions.srt",
        "captions.vtt",
        "speakers.json",
        "transcript.json",
        "transcript.txt",
    ]
    # ASR did not run again: the relabel job has no transcribe stage and took well under the ASR time,
    # the transcribe job's record is the same attempt, and the words and times are unchanged.
    took = datetime.fromisoformat(relabel["finished_at"]) - datetime.fromisoformat(relabel["started_at"])
    asr = datetime.fromisoformat(job_b["finished_at"]) - datetime.fromisoformat(job_b["started_at"])
    assert took.total_seconds() < min(5.0, asr.total_seconds()), (took, asr)
    again = (await client.get(f"/v1/jobs/{job_b['id']}", headers=ALICE)).json()
    assert again["attempt"] == job_b["attempt"] and again["started_at"] == job_b["started_at"]
    after = json.loads(await artifact(client, job_b["id"], "transcript.json"))
    assert after["text"] == transcript_b["text"]
    assert [w for s in after["segments"] for w in s["words"]] == [
        w for s in transcript_b["segments"] for w in s["words"]
    ]
    named = {v["label"]: (v["name"], v["similarity"]) for v in after["voices"]}
    assert named[sheila_b] == ("Sheila", None) and named[diane_b][0] == "Diane"
    srt = await artifact(client, job_b["id"], "captions.srt")
    assert "Sheila:" in srt and "Diane:" in srt and f"{sheila_b}:" not in srt
    assert "<v Sheila>" in await artifact(client, job_b["id"], "captions.vtt")
    assert "Sheila: " in await artifact(client, job_b["id"], "transcript.txt")
    sizes = {a["name"]: a["size"] for a in again["artifacts"]}
    assert sizes["captions.srt"] == len(srt.encode())

    # 4. Enroll Diane from a clip of her own speech instead (10.6-14.4 s of the first file).
    clip = await upload(client, cut(sample, tmp_path / "diane.wav", 10.6, 14.4))
    pending = await client.post(
        "/v1/speakers", json={"name": "Diane (clip)", "media_id": clip.json()["id"]}, headers=ALICE
    )
    assert pending.status_code == 202, pending.text
    assert pending.json()["state"] == "pending" and pending.json()["job_id"]
    from_clip = await wait_speaker(client, pending.json()["id"])
    assert from_clip["state"] == "ready" and from_clip["seconds"] >= transcriber_speakers.MIN_ENROLL_SECONDS
    assert (await client.delete(f"/v1/speakers/{diane['id']}", headers=ALICE)).status_code == 204
    listed = (await client.get("/v1/speakers", headers=ALICE)).json()["speakers"]
    assert sorted(s["name"] for s in listed) == ["Diane (clip)", "Sheila"]

    # 5. A new transcription of the second file names both from the registry: Sheila, Diane's clip.
    job_c = await wait_terminal(client, (await transcribe(client, second))["id"], timeout=240)
    transcript_c = json.loads(await artifact(client, job_c["id"], "transcript.json"))
    names_c = {v["label"]: v["name"] for v in transcript_c["voices"]}
    assert names_c[label_of(transcript_c, ref["Sheila"], 15.0)] == "Sheila"
    assert names_c[label_of(transcript_c, ref["Diane"], 15.0)] == "Diane (clip)"

    # 6. Tenants are apart: Bob sees none of Alice's speakers, and his transcript names nobody.
    assert (await client.get("/v1/speakers", headers=BOB)).json()["speakers"] == []
    assert_problem(await client.get(f"/v1/speakers/{sheila['id']}", headers=BOB), 404, "speaker_not_found")
    assert_problem(await client.delete(f"/v1/speakers/{sheila['id']}", headers=BOB), 404, "speaker_not_found")
    stolen = {"name": "Diane", "job_id": job_a["id"], "speaker": diane_a}
    assert_problem(await client.post("/v1/speakers", json=stolen, headers=BOB), 404, "job_not_found")
    rename = {"names": {sheila_b: "Eve"}}
    assert_problem(
        await client.patch(f"/v1/jobs/{job_b['id']}/speakers", json=rename, headers=BOB), 404, "job_not_found"
    )
    job_bob = await wait_terminal(client, (await transcribe(client, second, BOB))["id"], BOB, timeout=240)
    transcript_bob = json.loads(await artifact(client, job_bob["id"], "transcript.json", BOB))
    assert [v["name"] for v in transcript_bob["voices"]] == [None, None]


async def test_speaker_errors_have_codes(stack, media, tmp_path):
    client = stack
    post = client.post

    async def enroll(body: Any) -> httpx.Response:
        return await post("/v1/speakers", json=body, headers=ALICE)

    assert_problem(await enroll({"media_id": "m_x"}), 422, "invalid_name")
    assert_problem(await enroll({"name": "   ", "media_id": "m_x"}), 422, "invalid_name")
    assert_problem(await enroll({"name": "x" * 101, "media_id": "m_x"}), 422, "invalid_name")
    assert_problem(await enroll({"name": "Ann"}), 422, "invalid_source")
    assert_problem(await enroll({"name": "Ann", "media_id": "m_x", "job_id": "j_x"}), 422, "invalid_source")
    assert_problem(await enroll({"name": "Ann", "media_id": "m_x", "speaker": "SPEAKER_00"}), 422, "invalid_source")
    assert_problem(await enroll({"name": "Ann", "job_id": "j_x"}), 422, "invalid_source")
    assert_problem(await enroll({"name": "Ann", "voice": 1}), 422, "invalid_request")
    assert_problem(await enroll(["Ann"]), 422, "invalid_request")
    assert_problem(await enroll({"name": "Ann", "media_id": "m_00000000000000000000000000"}), 404, "media_not_found")
    unknown_job = {"name": "Ann", "job_id": "j_00000000000000000000000000", "speaker": "SPEAKER_00"}
    assert_problem(await enroll(unknown_job), 404, "job_not_found")
    assert_problem(
        await client.get("/v1/speakers/v_00000000000000000000000000", headers=ALICE), 404, "speaker_not_found"
    )
    assert (await client.get("/v1/speakers")).status_code == 401

    # a transcript without diarization has no voice prints; a missing label is named as such
    sonnet = (await upload(client, media / "jfk.flac")).json()
    body = {"type": "transcribe", "input": {"media_id": sonnet["id"]}, "options": {"formats": ["srt"]}}
    plain = await wait_terminal(client, (await post("/v1/jobs", json=body, headers=ALICE)).json()["id"], timeout=240)
    assert plain["state"] == "succeeded", plain
    from_plain = {"name": "Ann", "job_id": plain["id"], "speaker": "SPEAKER_00"}
    assert_problem(await enroll(from_plain), 409, "no_voice_prints")
    patch = client.patch
    url = f"/v1/jobs/{plain['id']}/speakers"
    assert_problem(
        await patch(url, json={"names": {"SPEAKER_00": "Ann"}}, headers=ALICE), 409, "transcript_unavailable"
    )
    assert_problem(await patch(url, json={"names": {}}, headers=ALICE), 422, "invalid_input")
    assert_problem(await patch(url, json={"names": {"SPEAKER_00": ""}}, headers=ALICE), 422, "invalid_name")
    assert_problem(
        await patch(url, json={"names": {"SPEAKER_00": "A"}, "enroll": "yes"}, headers=ALICE), 422, "invalid_request"
    )
    assert_problem(
        await patch(f"/v1/jobs/{plain['id']}x/speakers", json={"names": {"SPEAKER_00": "A"}}, headers=ALICE),
        404,
        "job_not_found",
    )

    diarized = {**body, "options": {"diarize": True, "formats": ["json"]}}
    spoken = await wait_terminal(
        client, (await post("/v1/jobs", json=diarized, headers=ALICE)).json()["id"], timeout=240
    )
    assert spoken["state"] == "succeeded", spoken
    missing = {"name": "Ann", "job_id": spoken["id"], "speaker": "SPEAKER_07"}
    assert_problem(await enroll(missing), 404, "speaker_label_not_found")
    url = f"/v1/jobs/{spoken['id']}/speakers"
    assert_problem(
        await patch(url, json={"names": {"SPEAKER_07": "Ann"}}, headers=ALICE), 404, "speaker_label_not_found"
    )

    # a clip with no speech: its enroll job fails with a code, and the speaker says so
    silence = tmp_path / "silence.wav"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "3", str(silence)],
        check=True,
    )
    quiet = (await upload(client, silence)).json()
    pending = await enroll({"name": "Nobody", "media_id": quiet["id"]})
    assert pending.status_code == 202, pending.text
    failed = await wait_speaker(client, pending.json()["id"])
    assert failed["state"] == "failed" and failed["error"]["code"] == "too_little_speech", failed
