"""The wire vocabulary: request and response bodies of the REST API (pydantic v2)."""

from __future__ import annotations

from collections import Counter
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CompileRequest(_Body):
    path: str = Field(description="Notebook path relative to the server root.")
    content: dict[str, Any] | None = Field(
        default=None, description="The open notebook's current content (unsaved edits)."
    )


class SplitRequest(CompileRequest):
    level: int = Field(
        default=2, ge=1, le=6, description="Headings of this level or above start a step."
    )


class CreateRun(CompileRequest):
    backend: str | None = Field(default=None, description="Default: the server's default.")
    parameters: dict[str, Any] = Field(default_factory=dict)
    jobs: int | None = Field(default=None, ge=1)
    no_cache: bool = False
    profile: str | None = Field(
        default=None,
        description="argo: the cluster profile to run with; None: the server's default "
        "(CellpipeApp.default_profile, else $CELLPIPE_PROFILE); '': none. Other backends "
        "ignore it.",
    )


class ResumeRun(_Body):
    content: dict[str, Any] | None = Field(
        default=None, description="The fixed notebook's content; default: the saved file."
    )


class DescribeStep(BaseModel):
    name: str
    state: str
    duration_s: float | None = None
    attempts: int = 0
    cached: bool = False
    message: str = ""
    cell: int | None = None
    cell_id: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    group: str | None = Field(
        None, description="Part of a composed notebook (`notebook_a`); None: the main's."
    )
    notebook: str | None = Field(None, description="That part's notebook, relative to the main.")
    iterations: dict[str, int] | None = Field(
        None, description="A foreach step's progress: `{done, total}` (shown as 7/20)."
    )


class DescribeRun(BaseModel):
    run_id: str
    path: str | None = Field(description="Notebook path relative to the server root.")
    backend: str
    state: str
    message: str = ""
    parameters: dict[str, Any] = Field(default_factory=dict)
    started_at: float | None = None
    ended_at: float | None = None
    duration_s: float | None = None
    steps: list[DescribeStep] = Field(default_factory=list)
    step_counts: dict[str, int] = Field(
        default_factory=dict,
        description="Steps per state, e.g. {'succeeded': 2, 'cached': 1}; the run list "
        "carries this summary instead of `steps`.",
    )
    metrics: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _count_steps(self) -> DescribeRun:
        if self.steps and not self.step_counts:
            self.step_counts = dict(Counter(s.state for s in self.steps))
        return self


class ListRunsResponse(BaseModel):
    runs: list[DescribeRun]
    total: int
    page: int
    page_size: int


class DescribeBackend(BaseModel):
    name: str
    available: bool
    reason: str = ""


class DescribeProfile(BaseModel):
    name: str
    path: str = Field(description="The profile's file on the server.")
    description: str = ""
    context: str | None = Field(None, description="The kubeconfig context it submits with.")
    argo: dict[str, Any] = Field(
        default_factory=dict, description="Its settings: keys of metadata.cellpipe.argo."
    )
    error: str = Field(
        "", description="Why it cannot be used (bad JSON, an unknown key); '': it can."
    )


class ListProfilesResponse(BaseModel):
    profiles: list[DescribeProfile]
    default: str | None = Field(
        None, description="The profile an argo run gets when its request names none."
    )
    folder: str = Field(description="Where the server reads profiles from.")
