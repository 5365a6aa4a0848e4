"""Parents and children: a job whose work is done by child jobs (a workflow, e.g. `caption`).

No worker slot waits for a child. The parent's handler creates its first child and returns `DETACHED`
(runtime/context.py), which leaves the parent `running`. After that, every time a child ends, the
worker that ran it calls `child_ended`: a failed or cancelled child ends the parent here (the same for
every workflow); a child that succeeded is handed to the parent's `Workflow`, which enqueues the next
step or finishes the parent. The job system defines this hook; workflows (mediaflow.common.workflows)
implement it, and the job system never imports one.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from ..errors import Conflict, MediaflowError, NotFound
from ..settings import Settings
from ..storage import Storage
from . import keys
from .model import Job, JobError, JobState, JobType
from .store import Events, JobStore, KeyChanges

log = logging.getLogger("mediaflow.jobs")


class Workflow(Protocol):
    """How a parent job type is driven by its children."""

    def progress(self, parent: Job, child: Job, fraction: float) -> float | None:
        """The parent's progress while `child` is at `fraction` (None: not shown on the parent)."""
        ...

    async def child_succeeded(
        self, store: JobStore, storage: Storage, settings: Settings, parent: Job, child: Job
    ) -> None:
        """Enqueue the parent's next step, or finish the parent. Called once per successful child
        (and possibly again for the same child: it must be idempotent)."""
        ...


Workflows = Mapping[JobType, Workflow]


async def add_child(store: JobStore, parent_id: str, child: Job) -> None:
    """Record the child on the parent (a parent that is ending refuses: Conflict `parent_finished`).
    The caller enqueues the child after this, so a child that finishes at once finds its parent
    pointing at it."""

    def mutate(p: Job) -> Events:
        if p.terminal or p.state == JobState.cancelling:
            raise Conflict(f"parent {p.id} is {p.state.value}", code="parent_finished")
        child.priority = p.priority  # a workflow's steps queue as urgently as the job they make up
        p.children = [*p.children, child.id]
        p.stage, p.message = child.type.value, f"{child.type.value} step queued ({child.id})"
        return [("progress", {"progress": p.progress, "stage": p.stage, "message": p.message})]

    await store.update(parent_id, mutate)


async def child_progress(store: JobStore, child: Job, fraction: float, message: str, workflows: Workflows) -> None:
    """Show a child's progress on its parent, as the parent's workflow weighs it."""

    def mutate(p: Job) -> Events:
        workflow = workflows.get(p.type)
        value = workflow.progress(p, child, min(max(fraction, 0.0), 1.0)) if workflow else None
        if p.terminal or value is None or value <= p.progress:
            return []
        p.progress, p.stage, p.message = value, child.type.value, message
        return [("progress", {"progress": p.progress, "stage": p.stage, "message": message})]

    if child.parent_id and workflows:
        with contextlib.suppress(NotFound):
            await store.update(child.parent_id, mutate)


async def finish_parent(store: JobStore, parent_id: str, state: JobState, **fields: Any) -> None:
    """End a running parent (a parent that already ended stays as it is)."""
    with contextlib.suppress(Conflict):
        await store.transition(parent_id, state, allowed_from={JobState.running}, **fields)


async def settle_cancelled_parent(store: JobStore, parent_id: str) -> None:
    """A cancelled parent becomes `cancelled` once none of its children runs any more. (Called when a
    child ends, and by Dispatcher.cancel for children it cancelled while queued.)"""
    parent = await store.get(parent_id)
    if parent.terminal:
        return
    children = await store.get_many(parent.children)
    if any(not c.terminal for c in children):
        return
    if parent.state == JobState.running and not any(c.state == JobState.cancelled for c in children):
        return
    # No worker holds a detached parent: leave no abort request behind for its id.
    with contextlib.suppress(Conflict):
        await store.transition(
            parent_id, JobState.cancelled, message="cancelled", changes=KeyChanges(leave=(keys.ABORTS,))
        )


async def child_ended(store: JobStore, storage: Storage, settings: Settings, job_id: str, workflows: Workflows) -> None:
    """Called when job `job_id` may have ended. If it is a child whose parent is still running, the
    parent moves on. Safe to call more than once. A problem is recorded on the parent, never raised."""
    try:
        await _advance(store, storage, settings, job_id, workflows)
    except MediaflowError as exc:
        log.warning("the step after %s failed: %s", job_id, exc.message)
        with contextlib.suppress(Exception):
            child = await store.get(job_id)
            if child.parent_id:
                await finish_parent(
                    store, child.parent_id, JobState.failed, error=JobError(code=exc.code, message=exc.message)
                )
    except Exception:
        log.exception("the step after %s failed", job_id)


async def _advance(store: JobStore, storage: Storage, settings: Settings, job_id: str, workflows: Workflows) -> None:
    try:
        child = await store.get(job_id)
        if not child.parent_id or not child.terminal:
            return
        parent = await store.get(child.parent_id)
    except NotFound:
        return
    if parent.terminal:
        return
    if parent.state == JobState.cancelling or child.state == JobState.cancelled:
        await settle_cancelled_parent(store, parent.id)
    elif child.state == JobState.failed:
        err = child.error or JobError(code="child_failed", message="")
        await finish_parent(
            store,
            parent.id,
            JobState.failed,
            error=JobError(
                code=err.code,
                message=f"{child.type.value} step {child.id} failed: {err.message}",
                retryable=err.retryable,
            ),
        )
    elif (workflow := workflows.get(parent.type)) is None:
        raise MediaflowError(f"this worker knows no workflow for {parent.type.value} jobs", code="no_workflow")
    else:
        await workflow.child_succeeded(store, storage, settings, parent, child)
