"""Options of the speaker-registry jobs (`POST /v1/speakers`, `PATCH /v1/jobs/{id}/speakers`): made by
the gateway, run on the transcriber, where the speaker-embedding model lives."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

SpeakerName = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
SpeakerLabel = Annotated[str, StringConstraints(pattern=r"^SPEAKER_\d{2,3}$")]


class EnrollOptions(BaseModel):
    """Embed the clip (the job's input) and make registry entry `speaker_id` ready with its voice print."""

    model_config = ConfigDict(extra="forbid")

    speaker_id: str = Field(pattern=r"^v_[0-9a-z]{26}$")


class RelabelOptions(BaseModel):
    """Rename speakers of the succeeded transcribe job `job_id` (a name of null drops the name) and
    rewrite its transcript and caption artifacts from the stored transcript."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(pattern=r"^j_[0-9a-z]{26}$")
    names: dict[SpeakerLabel, SpeakerName | None] = Field(min_length=1, max_length=64)
