"""The base of every typed config: unknown keys are errors, so a typo never silently does nothing."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
