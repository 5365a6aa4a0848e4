"""Resource ids: a type prefix + a ULID, so ids sort by creation time and say what they name."""

from ulid import ULID


def new_id(prefix: str) -> str:
    return f"{prefix}_{str(ULID()).lower()}"


def new_job_id() -> str:
    return new_id("j")


def new_media_id() -> str:
    return new_id("m")


def new_batch_id() -> str:
    return new_id("b")
