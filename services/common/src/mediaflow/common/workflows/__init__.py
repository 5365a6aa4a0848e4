"""Workflows: job types whose work is done by child jobs, plugged into the job system through its
`Workflow` hook (jobs/family.py). Every worker pool runs with this table, so that whichever pool runs a
child can move its parent on."""

from __future__ import annotations

from ..jobs.family import Workflows
from ..jobs.model import JobType
from .caption import CAPTION

WORKFLOWS: Workflows = {JobType.caption: CAPTION}
