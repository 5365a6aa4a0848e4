"""`mediaflow-compositor`: the compositor pool's worker process (ARQ worker + gRPC server)."""

from __future__ import annotations

import argparse

from mediaflow.common.jobs import JobType
from mediaflow.common.queues import COMPOSE_HEAVY_QUEUE, COMPOSE_QUEUE
from mediaflow.common.settings import get_settings
from mediaflow.common.worker import run_worker

from . import jobs


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mediaflow-compositor")
    parser.add_argument("--queue", default="compose", choices=["compose", "compose-heavy"],
                        help="which pool this worker serves")
    args = parser.parse_args(argv)
    queue = COMPOSE_HEAVY_QUEUE if args.queue == "compose-heavy" else COMPOSE_QUEUE
    run_worker(queue, {JobType.probe: jobs.probe}, get_settings(), "mediaflow-compositor")


if __name__ == "__main__":
    main()
