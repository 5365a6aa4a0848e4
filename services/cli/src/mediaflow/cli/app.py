"""`mediaflow`: the command line of mediaflow (docs/cli.md).

Every job command talks to `MEDIAFLOW_URL` with `MEDIAFLOW_API_KEY`; without MEDIAFLOW_URL it starts
an embedded stack (the `mediaflow up` supervisor, in a temporary data directory, on free ports) for
the duration of the command. Exit codes: 0 done, 1 failed (the problem or job error `code` is
printed), 2 usage, 130 interrupted (the running job is cancelled first).
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import uuid
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from mediaflow.common.settings import Settings

from .client import TERMINAL_STATES, ApiError, MediaflowClient
from .up import WORKER_KINDS, Stack, StackConfig, StackError, serve

app = typer.Typer(
    name="mediaflow",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Transcribe, caption and compose media with a mediaflow server (or an embedded one).",
)
jobs_app = typer.Typer(no_args_is_help=True, help="List, inspect, cancel and retry jobs.")
app.add_typer(jobs_app, name="jobs")
batches_app = typer.Typer(no_args_is_help=True, help="List, inspect, cancel and retry batches.")
app.add_typer(batches_app, name="batches")

# Not a terminal (a pipe, a test): wide enough that ids and paths are never cut.
out = Console(soft_wrap=True, highlight=False, width=None if sys.stdout.isatty() else 240)
err = Console(stderr=True, soft_wrap=True, highlight=False, width=None if sys.stderr.isatty() else 240)

DEMO_SAMPLE = "jfk_talk.mp4"  # shipped in the package (samples/); tests/fixtures/media has the same file
EXIT_FAILED, EXIT_INTERRUPTED = 1, 130
# Ctrl-C while a job is followed: the cancel request gets CANCEL_TIMEOUT_S, and the process is gone
# INTERRUPT_EXIT_S after the Ctrl-C whatever else is slow (against a server; an embedded stack is stopped
# with a short drain instead, so that no child is left behind).
CANCEL_TIMEOUT_S, INTERRUPT_EXIT_S = 2.5, 4.5
_embedded: list[Stack] = []  # the embedded stack of this command, if any


def default_data_dir() -> Path:
    settings = Settings()
    if settings.data_dir:
        return settings.data_dir
    return (settings.xdg_data_home or Path.home() / ".local" / "share") / "mediaflow"


def fail(code: str, message: str, exit_code: int = EXIT_FAILED) -> typer.Exit:
    err.print(f"[bold red]error[/]: {escape(code)}: {escape(message)}")
    return typer.Exit(exit_code)


def _reporter(console: Console, verbose: bool = True) -> Any:
    styles = {"ready": "green", "info": "dim", "warning": "yellow", "error": "bold red"}
    marks = {"ready": "✓", "info": "·", "warning": "!", "error": "✗"}

    def report(level: str, message: str) -> None:
        if verbose or level in ("warning", "error"):
            console.print(f"[{styles.get(level, '')}]{marks.get(level, '·')} {escape(message)}[/]")

    return report


@contextlib.contextmanager
def _interrupt_shortens_stop(stack: Stack) -> Iterator[None]:
    """While the stack stops, another Ctrl-C shortens the drain instead of abandoning children."""

    def handler(_signum: int, _frame: object) -> None:
        stack.config.stop_timeout = 0.5

    try:
        previous = signal.signal(signal.SIGINT, handler)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def connect(*, embedded: bool = True, workers: tuple[str, ...] = WORKER_KINDS) -> Iterator[MediaflowClient]:
    """A client of MEDIAFLOW_URL, or of an embedded stack started for this command."""
    settings = Settings()
    if settings.url:
        with MediaflowClient(settings.url, settings.api_key or None) as client:
            yield client
        return
    if not embedded:
        raise fail(
            "no_server",
            "MEDIAFLOW_URL is not set: point it at a running server "
            "(e.g. one started with `mediaflow up`) and set MEDIAFLOW_API_KEY",
        )
    data_dir = Path(tempfile.mkdtemp(prefix="mediaflow-embedded-"))
    err.print(f"[dim]MEDIAFLOW_URL is not set: starting an embedded stack (data in {data_dir})[/]")
    stack = Stack(StackConfig(data_dir=data_dir, workers=workers), report=_reporter(err))
    keep = False
    try:
        try:
            stack.start(wait_for=("api",))
        except StackError as exc:
            keep = True
            raise fail("stack_failed", f"{exc} (logs kept in {data_dir / 'logs'})") from exc
        _embedded.append(stack)
        try:
            with MediaflowClient(stack.url, stack.api_key) as client:
                yield client
        finally:
            _embedded.remove(stack)
            err.print("[dim]stopping the embedded stack ...[/]")
            with _interrupt_shortens_stop(stack):
                stack.stop()
    finally:
        if not keep:
            shutil.rmtree(data_dir, ignore_errors=True)


@contextlib.contextmanager
def api_errors() -> Iterator[None]:
    """ApiError -> `error: code: message`, exit 1."""
    try:
        yield
    except ApiError as exc:
        raise fail(exc.code, exc.message) from None


# ---- following a job ------------------------------------------------------------------------
#
# Ctrl-C (SIGINT) while a job is submitted or followed cancels the job and exits 130 within
# INTERRUPT_EXIT_S. The CLI installs its own SIGINT handler for that: a process started with SIGINT
# ignored (a background job of a non-interactive shell, e.g. `make test &` in a script) inherits SIG_IGN,
# and Python then installs no KeyboardInterrupt handler at all, so Ctrl-C used to be ignored and the job
# followed to its end.


def _exit_now(*_args: object) -> None:
    """Leave at once with 130 (a second Ctrl-C, or the exit deadline): flush what was printed."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(EXIT_INTERRUPTED)


def _set_sigint(handler: Any) -> Any:
    """signal.signal for SIGINT; None off the main thread (where no signal arrives anyway)."""
    try:
        return signal.signal(signal.SIGINT, handler)
    except ValueError:
        return None


_deadline: list[threading.Timer] = []


def _arm_exit_deadline() -> None:
    """From the first Ctrl-C on, the process has INTERRUPT_EXIT_S to be gone (once; not with an embedded
    stack, whose children must be stopped first: its drain is shortened instead)."""
    if _deadline or _embedded:
        return
    timer = threading.Timer(INTERRUPT_EXIT_S, _exit_now)
    timer.daemon = True
    timer.start()
    _deadline.append(timer)


def _interrupted(_signum: int, _frame: object) -> None:
    _arm_exit_deadline()
    raise KeyboardInterrupt


@contextlib.contextmanager
def _ctrl_c_interrupts() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt here, whatever SIGINT disposition the process inherited."""
    previous = _set_sigint(_interrupted)
    try:
        yield
    finally:
        if previous is not None:
            _set_sigint(previous)


@contextlib.contextmanager
def _ctrl_c_deferred() -> Iterator[list[int]]:
    """Around the submission (one short request): a Ctrl-C is noted and acted on once the job id is
    known, so that the job it created is cancelled too. A second Ctrl-C leaves at once."""
    noted: list[int] = []

    def note(signum: int, _frame: object) -> None:
        if noted:
            _exit_now()
        _arm_exit_deadline()
        noted.append(signum)

    previous = _set_sigint(note)
    try:
        yield noted
    finally:
        if previous is not None:
            _set_sigint(previous)


def cancel_and_exit(client: MediaflowClient, job_id: str) -> NoReturn:
    """Ctrl-C while `job_id` (or a batch, `b_…`) runs: cancel it and exit 130, within INTERRUPT_EXIT_S
    in every case.

    The cancel goes over a new connection with a short timeout: the interrupt may have cut the event
    stream's connection in the middle of a read, and the client's own timeouts are a minute long."""
    _set_sigint(_exit_now)  # a second Ctrl-C: leave at once
    _arm_exit_deadline()
    stack = _embedded[-1] if _embedded else None
    err.print(f"\n[yellow]interrupted: cancelling {job_id}[/]")
    try:
        with httpx.Client(base_url=client.base_url, headers=client.http.headers, timeout=CANCEL_TIMEOUT_S) as http:
            response = http.post(f"/v1/{'batches' if job_id.startswith('b_') else 'jobs'}/{job_id}/cancel")
        if response.status_code >= 400 and response.status_code != 409:  # 409: it has just ended
            err.print(f"[yellow]cancel of {job_id} answered {response.status_code}: {escape(response.text[:200])}[/]")
    except httpx.HTTPError as exc:
        err.print(f"[yellow]could not cancel {job_id} ({escape(str(exc))})[/]")
    if stack is not None:
        stack.config.stop_timeout = 1.0  # the job is cancelled: the embedded workers need no drain
    raise typer.Exit(EXIT_INTERRUPTED)


def follow(client: MediaflowClient, job: dict[str, Any], quiet: bool = False) -> dict[str, Any]:
    """Show the job's progress from its SSE stream until it is terminal. Ctrl-C cancels the job
    and exits 130. Returns the final job resource."""
    with _ctrl_c_interrupts():
        return _follow(client, job, quiet)


def _follow(client: MediaflowClient, job: dict[str, Any], quiet: bool) -> dict[str, Any]:
    job_id = job["id"]
    try:
        with Progress(
            TextColumn("[bold]{task.fields[label]}"),
            BarColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.description}"),
            console=err,
            transient=False,
            disable=quiet,
        ) as progress:
            task = progress.add_task(job["state"], total=1.0, label=f"{job['type']} {job_id}")
            for event in client.events(job_id):
                data = event.data
                if event.event == "progress":
                    text = " · ".join(str(p) for p in (data.get("stage"), data.get("message")) if p)
                    progress.update(task, completed=float(data.get("progress") or 0.0), description=escape(text))
                elif event.event == "state":
                    state = data.get("state", "")
                    if state == "succeeded":
                        progress.update(task, completed=1.0)
                    attempt = data.get("attempt")
                    suffix = f" (attempt {attempt})" if attempt and attempt > 1 else ""
                    note = f" — {data['message']}" if data.get("message") else ""
                    progress.update(task, description=escape(f"{state}{suffix}{note}"))
                    if data.get("message") and state == "queued" and data.get("attempt") is not None:
                        progress.console.print(f"[yellow]{escape(job_id)}: {escape(data['message'])}[/]")
                elif event.event == "log" and data.get("level") in ("warning", "error"):
                    progress.console.print(f"[yellow]{escape(str(data.get('message', '')))}[/]")
        return client.job(job_id)
    except KeyboardInterrupt:
        cancel_and_exit(client, job_id)


def download_artifacts(client: MediaflowClient, job: dict[str, Any], dest: Path) -> list[Path]:
    """The job's artifacts and those of its children (a caption job's transcript and video)."""
    written: list[Path] = []
    seen: set[str] = set()
    jobs = [job] + [client.job(child) for child in job.get("children") or []]
    for item in jobs:
        for artifact in item.get("artifacts") or []:
            name = artifact["name"]
            if name in seen:
                continue
            seen.add(name)
            target = dest / Path(name).name
            client.download(item["id"], name, target)
            written.append(target)
    return written


def finish(
    client: MediaflowClient, job: dict[str, Any], out_dir: Path | None, quiet: bool = False
) -> tuple[dict[str, Any], list[Path]]:
    """Follow, then download on success or fail with the job's error code."""
    final = follow(client, job, quiet=quiet)
    if final["state"] != "succeeded":
        error = final.get("error") or {}
        code = error.get("code") or final["state"]
        raise fail(code, error.get("message") or f"job {final['id']} ended {final['state']}")
    dest = out_dir if out_dir is not None else Path("out") / final["id"]
    files = download_artifacts(client, final, dest)
    if not files and not quiet:
        out.print(f"{final['type']} {final['id']} succeeded")
    if not quiet and files:
        table = Table("artifact", "size", title=f"{final['type']} {final['id']} succeeded → {dest}")
        for path in files:
            table.add_row(str(path), f"{path.stat().st_size:,}")
        out.print(table)
    if not quiet and (line := coverage_line((final.get("result") or {}).get("metrics"))):
        out.print(line)
    return final, files


def coverage_line(metrics: dict[str, Any] | None) -> str | None:
    """The transcriber's coverage guard in one line: speech found, speech the words cover, re-decodes."""
    if not metrics or "speech_seconds" not in metrics:
        return None
    speech, covered = metrics["speech_seconds"], metrics["covered_speech_seconds"]
    share = f" ({covered / speech:.0%})" if speech else ""
    return (
        f"speech {speech:.1f} s, covered by words {covered:.1f} s{share}, "
        f"windows decoded again {metrics.get('redecoded_windows', 0)}"
    )


def submit_and_finish(
    client: MediaflowClient, body: dict[str, Any], out_dir: Path | None, detach: bool, quiet: bool = False
) -> tuple[dict[str, Any], list[Path]]:
    if detach:
        job = client.submit(body, idempotency_key=str(uuid.uuid4()))
        out.print(job["id"])
        return job, []
    with _ctrl_c_interrupts():  # no gap between the submission and the follow for a Ctrl-C to fall in
        with _ctrl_c_deferred() as interrupted:
            job = client.submit(body, idempotency_key=str(uuid.uuid4()))
        try:
            if interrupted:
                raise KeyboardInterrupt
            return finish(client, job, out_dir, quiet=quiet)
        except KeyboardInterrupt:
            cancel_and_exit(client, job["id"])


def upload(client: MediaflowClient, path: Path) -> str:
    if not path.is_file():
        raise fail("file_not_found", f"{path} is not a file")
    media = client.upload(path)
    err.print(f"[dim]uploaded {escape(path.name)} → {media['id']}[/]")
    return media["id"]


def run_batch(
    client: MediaflowClient, files: list[Path], template: dict[str, Any], out_dir: Path | None, detach: bool
) -> None:
    """Upload FILES and submit them as one batch; follow it with one progress line per file and a
    total, then download each finished item's artifacts to <out>/<file stem>/. Exit 1 unless every
    item succeeded; Ctrl-C cancels the whole batch."""
    items, names = [], []
    for path in files:  # one file that is missing or refused does not stop the others
        if not path.is_file():
            err.print(f"[yellow]{escape(str(path))}: not a file; left out[/]")
            continue
        try:
            items.append({"media_id": upload(client, path)})
            names.append(path.name)
        except ApiError as exc:
            err.print(f"[yellow]{escape(path.name)}: not uploaded: {escape(exc.code)}: {escape(exc.message)}[/]")
    if not items:
        raise fail("batch_empty", "no file could be uploaded")
    with _ctrl_c_interrupts():
        with _ctrl_c_deferred() as interrupted:
            created = client.submit_batch({"items": items, "template": template})
        batch_id = created["id"]
        for rejected in created["rejected"]:
            why = f"{rejected['code']}: {rejected['detail']}"
            err.print(f"[yellow]{escape(names[rejected['index']])}: rejected: {escape(why)}[/]")
        if detach:
            out.print(batch_id)
            return
        try:
            if interrupted:
                raise KeyboardInterrupt
            final = _follow_batch(client, batch_id, names)
        except KeyboardInterrupt:
            cancel_and_exit(client, batch_id)
    dest = out_dir if out_dir is not None else Path("out") / batch_id
    stems = [Path(name).stem for name in names]
    table = Table("file", "state", "job", "artifacts", title=f"batch {batch_id}: {final['state']} → {dest}")
    for item in final["items"]:
        name, stem = names[item["index"]], stems[item["index"]]
        where = ""
        if item["state"] == "succeeded":  # talk.mp4 and talk.wav (or a/talk.mp4, b/talk.mp4) must not share a folder
            where = str(dest / (stem if stems.count(stem) == 1 else f"{stem}-{item['index'] + 1}"))
            download_artifacts(client, client.job(item["job_id"]), Path(where))
        elif item.get("error"):
            where = f"{item['error']['code']}: {item['error']['message']}"
        table.add_row(escape(name), item["state"], item["job_id"], escape(where))
    out.print(table)
    if final["state"] != "succeeded":
        counts = ", ".join(f"{n} {state}" for state, n in final["counts"].items())
        raise fail(f"batch_{final['state']}", f"batch {batch_id} ended {final['state']} ({counts})")


def _follow_batch(client: MediaflowClient, batch_id: str, names: list[str]) -> dict[str, Any]:
    with Progress(
        TextColumn("[bold]{task.fields[label]}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.description}"),
        console=err,
        transient=False,
    ) as progress:
        tasks: dict[int, Any] = {}
        total = None
        for event in client.batch_events(batch_id):
            data = event.data
            changed = data.get("items", []) if event.event == "batch" else [data] if event.event == "item" else []
            for item in changed:
                if item["index"] not in tasks:
                    tasks[item["index"]] = progress.add_task("", total=1.0, label=escape(names[item["index"]]))
                done = 1.0 if item["state"] == "succeeded" else float(item.get("progress") or 0.0)
                text = " · ".join(str(p) for p in (item["state"], item.get("stage")) if p)
                if item.get("error"):
                    text += f" — {item['error']['code']}"
                progress.update(tasks[item["index"]], completed=done, description=escape(text))
            if event.event == "batch":
                if total is None:
                    total = progress.add_task("", total=1.0, label=f"total ({data['total']} files)")
                counts = ", ".join(f"{n} {state}" for state, n in data["counts"].items())
                progress.update(total, completed=float(data["progress"]), description=f"{data['state']} · {counts}")
    return client.batch(batch_id)


# ---- commands -------------------------------------------------------------------------------

OutOption = Annotated[Path | None, typer.Option("--out", "-o", help="where artifacts go [default: out/<job id>]")]
DetachOption = Annotated[bool, typer.Option("--detach", "-d", help="submit, print the job id and return")]
PriorityOption = Annotated[
    str | None, typer.Option(help="high | normal | low: which queued work runs first [default: normal]")
]


def prioritised(body: dict[str, Any], priority: str | None) -> dict[str, Any]:
    """A job body (or batch template) with `priority`, when one was given (the gateway checks it)."""
    return {**body, "priority": priority} if priority else body


@app.command()
def up(
    port: Annotated[int, typer.Option(help="gateway port")] = 8000,
    host: Annotated[str, typer.Option(help="gateway address (0.0.0.0 to serve the network)")] = "127.0.0.1",
    data_dir: Annotated[
        Path | None,
        typer.Option(
            help="Valkey data, storage, logs, API key [default: $MEDIAFLOW_DATA_DIR or ~/.local/share/mediaflow]"
        ),
    ] = None,
    workers: Annotated[str, typer.Option(help="comma list of the workers to run")] = ",".join(WORKER_KINDS),
) -> None:
    """Run the whole stack on this machine until Ctrl-C: Valkey, the gateway and the workers."""
    data = data_dir or default_data_dir()
    kinds = tuple(w.strip() for w in workers.split(",") if w.strip())
    stack = Stack(StackConfig(data_dir=data, host=host, port=port, workers=kinds), report=_reporter(out))
    try:
        stack.start(wait_for=("api",))
    except StackError as exc:
        raise fail("stack_failed", str(exc)) from None
    except KeyboardInterrupt:
        raise typer.Exit(EXIT_INTERRUPTED) from None
    redis_note = "embedded Valkey" if stack.embedded_valkey_port else "external Redis"
    out.print(f"\n[bold green]mediaflow is up[/] ({redis_note}: {stack.redis_url})")
    out.print(f"  URL:      {stack.url}   (docs: {stack.url}/docs)")
    out.print(f"  API key:  {stack.api_key}")
    out.print(f"  data:     {stack.config.data_dir}   (logs in {stack.config.data_dir / 'logs'})")
    out.print(f"  CLI:      export MEDIAFLOW_URL={stack.url} MEDIAFLOW_API_KEY={stack.api_key}")
    out.print(f'  curl:     curl -H "Authorization: Bearer {stack.api_key}" {stack.url}/v1/queues')
    out.print("Workers report below when they are ready. Press Ctrl-C to stop.\n")
    serve(stack)
    alive = [c.name for c in stack.children if c.alive()]
    if alive:
        raise fail("stop_failed", f"still running: {', '.join(alive)}")
    out.print(f"[bold]stopped[/]: all {len(stack.children)} processes exited")
    if stack.failed:
        raise fail("stack_failed", stack.failed)


@app.command()
def transcribe(
    files: Annotated[list[Path], typer.Argument(help="audio or video files (several: one batch)")],
    language: Annotated[str | None, typer.Option(help="language code; default: detect")] = None,
    task: Annotated[str, typer.Option(help="transcribe | translate (to English)")] = "transcribe",
    diarize: Annotated[bool, typer.Option("--diarize", help="label speakers")] = False,
    min_speakers: Annotated[int | None, typer.Option()] = None,
    max_speakers: Annotated[int | None, typer.Option()] = None,
    formats: Annotated[str | None, typer.Option(help="comma list of srt,vtt,scc,ass,json,txt [default: all]")] = None,
    speaker_labels: Annotated[bool, typer.Option("--speaker-labels", help="prefix captions with speakers")] = False,
    out_dir: OutOption = None,
    detach: DetachOption = False,
    priority: PriorityOption = None,
) -> None:
    """Transcribe FILES and write captions (SRT, VTT, SCC, ASS) and a transcript of each."""
    options: dict[str, Any] = {"task": task, "diarize": diarize}
    if language:
        options["language"] = language
    if min_speakers:
        options["min_speakers"] = min_speakers
    if max_speakers:
        options["max_speakers"] = max_speakers
    if formats:
        options["formats"] = [f.strip() for f in formats.split(",") if f.strip()]
    if speaker_labels:
        options["captions"] = {"speaker_labels": True}
    with api_errors(), connect(workers=("transcriber", "compositor")) as client:
        if len(files) > 1:
            run_batch(client, files, prioritised({"type": "transcribe", "options": options}, priority), out_dir, detach)
            return
        media_id = upload(client, files[0])
        body = {"type": "transcribe", "input": {"media_id": media_id}, "options": options}
        _final, written = submit_and_finish(client, prioritised(body, priority), out_dir, detach)
        _print_transcript(written)


def _print_transcript(files: list[Path]) -> None:
    text = next((p for p in files if p.name == "transcript.txt"), None)
    if text is not None:
        content = text.read_text(errors="replace").strip()
        out.print(escape(content if len(content) <= 800 else content[:800] + " …"), soft_wrap=False)


@app.command()
def caption(
    videos: Annotated[list[Path], typer.Argument(help="video files (several: one batch)")],
    burn: Annotated[bool, typer.Option("--burn", help="burn the captions into the picture (the default)")] = False,
    soft: Annotated[bool, typer.Option("--soft", help="add the captions as a subtitle track")] = False,
    language: Annotated[str | None, typer.Option(help="language code; default: detect")] = None,
    resolution: Annotated[str | None, typer.Option(help="1280x720 | 1920x1080 | 3840x2160")] = None,
    quality: Annotated[str | None, typer.Option(help="draft | standard | high")] = None,
    out_dir: OutOption = None,
    detach: DetachOption = False,
    priority: PriorityOption = None,
) -> None:
    """Transcribe VIDEOS, then burn in and/or mux their captions: writes output.mp4 and the captions
    of each (`--burn --soft`: both)."""
    mode = "both" if burn and soft else "soft" if soft else "burn"
    options: dict[str, Any] = {"mode": mode, "transcribe": {"language": language} if language else {}}
    output = {k: v for k, v in {"resolution": resolution, "quality": quality}.items() if v}
    if output:
        options["output"] = output
    with api_errors(), connect(workers=("transcriber", "compositor")) as client:
        if len(videos) > 1:
            run_batch(client, videos, prioritised({"type": "caption", "options": options}, priority), out_dir, detach)
            return
        media_id = upload(client, videos[0])
        body = {"type": "caption", "input": {"media_id": media_id}, "options": options}
        submit_and_finish(client, prioritised(body, priority), out_dir, detach)


LOCAL_MEDIA_KEYS = ("file", "path")


def _upload_timeline_media(client: MediaflowClient, node: Any, base: Path, server_paths: bool) -> Any:
    """Replace every local `file` (and `path`, unless --server-paths) in the timeline by a `media_id`."""
    if isinstance(node, list):
        return [_upload_timeline_media(client, item, base, server_paths) for item in node]
    if not isinstance(node, dict):
        return node
    node = {k: _upload_timeline_media(client, v, base, server_paths) for k, v in node.items()}
    for key in LOCAL_MEDIA_KEYS:
        if key == "path" and server_paths:
            continue
        if isinstance(node.get(key), str):
            local = Path(node.pop(key)).expanduser()
            node["media_id"] = upload(client, local if local.is_absolute() else base / local)
    return node


@app.command()
def compose(
    timeline: Annotated[Path, typer.Argument(help="JSON: a compose job body, or just its options")],
    server_paths: Annotated[
        bool, typer.Option("--server-paths", help="send `path` entries as server-side paths instead of uploading them")
    ] = False,
    out_dir: OutOption = None,
    detach: DetachOption = False,
    priority: PriorityOption = None,
) -> None:
    """Render a timeline (intro, videos, images, transitions, outro) to output.mp4. Local media named
    by `file` or `path` (relative to the timeline file) are uploaded first."""
    try:
        data = json.loads(timeline.read_text())
    except FileNotFoundError:
        raise fail("file_not_found", f"{timeline} does not exist") from None
    except ValueError as exc:
        raise fail("invalid_timeline", f"{timeline} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise fail("invalid_timeline", f"{timeline} must hold a JSON object")
    body = data if "type" in data else {"type": "compose", "options": data}
    with api_errors(), connect(workers=("compositor", "compositor-heavy")) as client:
        body = _upload_timeline_media(client, body, timeline.resolve().parent, server_paths)
        submit_and_finish(client, prioritised(body, priority), out_dir, detach)


@app.command()
def probe(
    file: Annotated[Path, typer.Argument(help="media file")],
    detach: DetachOption = False,
    priority: PriorityOption = None,
) -> None:
    """Read FILE's metadata (duration, streams) with a probe job on the compositor pool."""
    with api_errors(), connect(workers=("compositor",)) as client:
        media_id = upload(client, file)
        body = {"type": "probe", "input": {"media_id": media_id}}
        final, _ = submit_and_finish(client, prioritised(body, priority), None, detach, quiet=False)
        if not detach:
            out.print_json(data=final.get("result") or {})


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="where the outputs go")] = Path("out/demo"),
    sample: Annotated[Path | None, typer.Option(help=f"media to caption [default: the bundled {DEMO_SAMPLE}]")] = None,
    job: Annotated[str, typer.Option(help="caption | transcribe")] = "caption",
) -> None:
    """Start an embedded stack, caption a bundled sample, print where the outputs are, stop."""
    media = sample or find_sample()
    if media is None:
        raise fail("sample_not_found", f"the bundled sample {DEMO_SAMPLE} was not found; pass --sample FILE")
    err.print(f"[bold]mediaflow demo[/]: {job} of {media}")
    with api_errors(), connect(workers=("transcriber", "compositor")) as client:
        media_id = upload(client, media)
        if job == "transcribe":
            body: dict[str, Any] = {"type": "transcribe", "input": {"media_id": media_id}, "options": {}}
        else:
            body = {
                "type": "caption",
                "input": {"media_id": media_id},
                "options": {"mode": "both", "output": {"resolution": "1280x720", "quality": "standard"}},
            }
        final, files = submit_and_finish(client, body, out_dir, detach=False)
    _print_transcript(files)
    out.print(f"\n[bold green]demo done[/]: {final['type']} job {final['id']} → outputs in {out_dir.resolve()}")
    names = {p.name: p for p in files}
    if "output.mp4" in names:
        out.print(f"  video with captions (burned in + subtitle track): {names['output.mp4']}")
    captions = [str(p) for n, p in names.items() if n.startswith("captions.")]
    if captions:
        out.print(f"  captions:   {', '.join(sorted(captions))}")
    transcript = [str(p) for n, p in names.items() if n.startswith("transcript.")]
    if transcript:
        out.print(f"  transcript: {', '.join(sorted(transcript))}")


def find_sample() -> Path | None:
    """The demo sample, shipped as package data."""
    sample = Path(str(resources.files("mediaflow.cli") / "samples" / DEMO_SAMPLE))
    return sample if sample.is_file() else None


# ---- jobs, batches and queues ---------------------------------------------------------------


def _fmt_time(value: str | None) -> str:
    return (value or "")[:19].replace("T", " ")


@jobs_app.command("ls")
def jobs_ls(
    state: Annotated[str | None, typer.Option(help="queued | running | succeeded | failed | cancelled")] = None,
    type: Annotated[str | None, typer.Option("--type", help="transcribe | compose | caption | probe")] = None,
    limit: Annotated[int, typer.Option(help="at most this many (newest first)")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON page")] = False,
) -> None:
    """List jobs, newest first."""
    with api_errors(), connect(embedded=False) as client:
        page = client.jobs(state=state, type=type, limit=limit)
    if as_json:
        out.print_json(data=page)
        return
    items = page.get("jobs") or []
    table = Table("id", "type", "state", "progress", "attempt", "created", "stage / error")
    for job in items:
        error = job.get("error") or {}
        detail = f"{error.get('code')}: {error.get('message')}" if error else job.get("stage", "")
        table.add_row(
            job["id"],
            job["type"],
            job["state"],
            f"{float(job.get('progress') or 0):.0%}",
            str(job.get("attempt", "")),
            _fmt_time(job.get("created_at")),
            escape(str(detail)),
        )
    out.print(table)


@batches_app.command("ls")
def batches_ls(
    limit: Annotated[int, typer.Option(help="at most this many (newest first)")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON page")] = False,
) -> None:
    """List batches, newest first."""
    with api_errors(), connect(embedded=False) as client:
        page = client.batches(limit=limit)
    if as_json:
        out.print_json(data=page)
        return
    table = Table("id", "state", "progress", "items", "created", "counts")
    for batch in page.get("batches") or []:
        counts = ", ".join(f"{n} {state}" for state, n in batch["counts"].items())
        table.add_row(
            batch["id"],
            batch["state"],
            f"{batch['progress']:.0%}",
            str(batch["total"]),
            _fmt_time(batch["created_at"]),
            counts,
        )
    out.print(table)


@batches_app.command("show")
def batches_show(batch_id: str) -> None:
    """Print a batch (with its items) as JSON."""
    with api_errors(), connect(embedded=False) as client:
        out.print_json(data=client.batch(batch_id))


@batches_app.command("cancel")
def batches_cancel(batch_id: str) -> None:
    """Cancel every item of the batch that has not ended."""
    with api_errors(), connect(embedded=False) as client:
        batch = client.cancel_batch(batch_id)
    out.print(f"{batch_id}: {batch['state']}")


@batches_app.command("retry")
def batches_retry(batch_id: str) -> None:
    """Retry the batch's failed and cancelled items."""
    with api_errors(), connect(embedded=False) as client:
        batch = client.retry_batch(batch_id)
    out.print(f"{batch_id}: {batch['state']}")


@jobs_app.command("show")
def jobs_show(job_id: str) -> None:
    """Print one job resource (JSON)."""
    with api_errors(), connect(embedded=False) as client:
        out.print_json(data=client.job(job_id))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str) -> None:
    """Cancel a queued or running job."""
    with api_errors(), connect(embedded=False) as client:
        job = client.cancel(job_id)
    out.print(f"{job['id']}: {job['state']}")


@jobs_app.command("retry")
def jobs_retry(
    job_id: str,
    follow_job: Annotated[bool, typer.Option("--follow", "-f", help="show progress and download artifacts")] = False,
    out_dir: OutOption = None,
) -> None:
    """Retry a failed or cancelled job (a new attempt of the same id)."""
    with api_errors(), connect(embedded=False) as client:
        job = client.retry(job_id)
        out.print(f"{job['id']}: {job['state']} (attempt {job.get('attempt', '?')} of {job.get('max_attempts', '?')})")
        if follow_job and job["state"] not in TERMINAL_STATES:
            finish(client, job, out_dir)


def _short(queue: object) -> str:
    return str(queue).removeprefix("mediaflow:queue:")


@app.command()
def queues(as_json: Annotated[bool, typer.Option("--json", help="print the JSON")] = False) -> None:
    """Queue depths and live workers (host, pid, model, device, current jobs, heartbeat, metrics URL)."""
    with api_errors(), connect(embedded=False) as client:
        data = client.queues()
    if as_json:
        out.print_json(data=data)
        return
    _print_queues(data)


def _queue_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    queue_rows = data.get("queues") or []
    if isinstance(queue_rows, dict):
        queue_rows = [{"name": k, **v} for k, v in queue_rows.items()]
    return list(queue_rows)


def _print_queues(data: dict[str, Any]) -> None:
    table = Table("queue", "queued", "running", "deferred", "succeeded", "failed", title="queues (recent: 1 h)")
    queue_rows = _queue_rows(data)
    for q in queue_rows:
        table.add_row(
            _short(q.get("name")),
            *(str(q.get(k, "")) for k in ("queued", "running", "deferred", "succeeded", "failed")),
        )
    out.print(table)
    workers = Table(
        "worker", "queue", "host", "pid", "model", "device", "current jobs", "heartbeat", "metrics", title="workers"
    )
    for q in queue_rows:
        for w in q.get("workers") or []:
            age = w.get("heartbeat_age_s")
            jobs = ", ".join(w.get("jobs") or []) or "—"
            hidden = int(w.get("busy") or 0) - len(w.get("jobs") or [])
            if hidden > 0:  # jobs of other tenants: counted, not named
                jobs += f" (+{hidden} other)" if jobs != "—" else f"{hidden} other"
            heartbeat = f"{age:.1f} s ago" if isinstance(age, int | float) else "?"
            workers.add_row(
                str(w.get("id")),
                _short(q.get("name")),
                str(w.get("host") or "—"),
                str(w.get("pid") or "—"),
                str(w.get("model") or "—"),
                str(w.get("device") or "—"),
                jobs,
                heartbeat + (" (draining)" if w.get("draining") else ""),
                str(w.get("metrics_url") or "—"),
            )
    out.print(workers)


def _marked(snippet: str) -> Text:
    """A search snippet (HTML-escaped, matches in <mark>) as terminal text with the matches bold."""
    text = Text()
    for i, part in enumerate(re.split(r"</?mark>", snippet)):
        text.append(html.unescape(part), style="bold yellow" if i % 2 else "")
    return text


def _clock(seconds: float) -> str:
    """m:ss.s, or h:mm:ss.s from an hour on."""
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    return f"{hours}:{minutes:02d}:{secs:04.1f}" if hours else f"{minutes}:{secs:04.1f}"


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="words to find, all of them in one segment (case and accents ignored)")],
    limit: Annotated[int, typer.Option(help="at most this many segments (1-100)")] = 20,
    cursor: Annotated[str | None, typer.Option(help="go on from a previous page (its next_cursor)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON page")] = False,
) -> None:
    """Search your transcripts: the segments holding every word, newest transcript first."""
    with api_errors(), connect(embedded=False) as client:
        page = client.search(query, limit=limit, cursor=cursor)
    if as_json:
        out.print_json(data=page)
        return
    hits = page.get("hits") or []
    if not hits:
        out.print("no matches")
        return
    table = Table("job", "at", "speaker", "text")
    for hit in hits:
        at = f"{_clock(hit['start'])}-{_clock(hit['end'])}"
        table.add_row(hit["job_id"], at, hit.get("speaker") or "", _marked(hit["snippet"]))
    out.print(table)
    if page.get("next_cursor"):
        out.print(f"more: mediaflow search {escape(json.dumps(query))} --cursor={page['next_cursor']}")


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="print the JSON of /v1/status")] = False) -> None:
    """ok, or degraded with each problem (stalled queue, crashing workers, Redis/storage); then the
    queues and workers. Exits 1 when degraded, so scripts can check it."""
    with api_errors(), connect(embedded=False) as client:
        report = client._request("GET", "/v1/status").json()
        data = client.queues() if not as_json else {}
    if as_json:
        out.print_json(data=report)
    else:
        problems = report.get("problems") or []
        if report.get("status") == "ok":
            out.print("[green]✓ ok[/]: every queue with jobs has a live worker; Redis and storage answer")
        else:
            out.print(f"[red]✗ {report.get('status')}[/]: {len(problems)} problem(s)")
            for p in problems:
                where = f" ({_short(p['queue'])})" if p.get("queue") else ""
                out.print(f"  {p.get('code')}{where}: {escape(str(p.get('message')))}")
        out.print()
        _print_queues(data)
    if report.get("status") != "ok":
        raise typer.Exit(EXIT_FAILED)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
