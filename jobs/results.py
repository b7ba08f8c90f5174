"""A job's results as OpenAI shows them: step metrics under OpenAI's names, and the results
file of a succeeded job (`result_files`), a CSV made from the stored step metrics.

    openai_metrics(checkpoint.metrics, validated=job.validation_file is not None)
    results_file_id("ftjob-abc")          # "file-results-abc": the job's results file
    results_job_id("file-results-abc")    # "ftjob-abc" (None for any other file id)
    b"".join(results_csv(rows))           # "step,train_loss,train_accuracy,valid_loss,..."

The results file is not stored: its id is derived from the job's, so the Files API serves
it from the job's `job_metrics` rows for as long as the job exists, and no worker has to
write it. Nothing here knows HTTP; `jobs.scope.TeamScope.results_job` finds the job.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

# OpenAI's checkpoint `metrics` keys (openai.types.fine_tuning.jobs.FineTuningJobCheckpoint).
CHECKPOINT_METRICS = (
    "step",
    "train_loss",
    "train_mean_token_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
    "full_valid_loss",
    "full_valid_mean_token_accuracy",
)
# The results file's first columns, as OpenAI's fine-tuning guide lists them; our own
# metrics follow, sorted by name.
RESULTS_COLUMNS = (
    "step",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
)
RESULTS_PURPOSE = "fine-tune-results"
RESULTS_FILENAME = "step_metrics.csv"

_JOB_PREFIX = "ftjob-"
_RESULTS_PREFIX = "file-results-"

# Where each OpenAI name is read from, first found wins: the OpenAI name itself (should the
# trainer report it), then ours of the same meaning. `loss` is the loss the step minimised
# (cross-entropy on the assistant tokens for SFT, the DPO loss, the RL objective); our
# `eval_*` values are on the validation file only when the job has one (else on training
# items), so the `valid_*` names take them only then. `full_valid_*` (the whole validation
# set at each epoch's end) has no counterpart: our evaluation reads `eval_samples` items.
_TRAIN_SOURCES: dict[str, tuple[str, ...]] = {
    "train_loss": ("train_loss", "loss"),
    "train_mean_token_accuracy": ("train_mean_token_accuracy", "mean_token_accuracy"),
}
_VALID_SOURCES: dict[str, tuple[str, ...]] = {
    "valid_loss": ("valid_loss", "eval_loss"),
    "valid_mean_token_accuracy": ("valid_mean_token_accuracy", "eval_mean_token_accuracy"),
    "full_valid_loss": ("full_valid_loss",),
    "full_valid_mean_token_accuracy": ("full_valid_mean_token_accuracy",),
}


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value if math.isfinite(value) else None


def _first(ours: Mapping[str, Any], names: Iterable[str]) -> float | int | None:
    for name in names:
        if (value := _number(ours.get(name))) is not None:
            return value
    return None


def openai_metrics(
    ours: Mapping[str, Any], *, validated: bool, step: int | None = None
) -> dict[str, float | int | None]:
    """OpenAI's metric names for one step (null where we have no value of that meaning);
    `validated`: the job has a validation file, so our `eval_*` values are validation ones."""
    out: dict[str, float | int | None] = {
        "step": step if step is not None else _first(ours, ["step"])
    }
    for name, sources in _TRAIN_SOURCES.items():
        out[name] = _first(ours, sources)
    for name, sources in _VALID_SOURCES.items():
        out[name] = _first(ours, sources) if validated else None
    return out


def with_openai_metrics(
    ours: Mapping[str, Any], *, validated: bool, step: int | None = None
) -> dict[str, Any]:
    """Our metrics with OpenAI's names beside them (OpenAI's take the name if both use it)."""
    return {**ours, **openai_metrics(ours, validated=validated, step=step)}


# -- the results file ----------------------------------------------------------------------------
def results_file_id(job_id: str) -> str:
    """The id of the job's results file; `-` never occurs in an uploaded file's id."""
    return _RESULTS_PREFIX + job_id.removeprefix(_JOB_PREFIX)


def results_job_id(file_id: str) -> str | None:
    """The job whose results file `file_id` is, or None when it is not a results file id."""
    if not file_id.startswith(_RESULTS_PREFIX) or len(file_id) == len(_RESULTS_PREFIX):
        return None
    return _JOB_PREFIX + file_id[len(_RESULTS_PREFIX) :]


def results_columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """OpenAI's columns, then every metric name of ours that any step reported (sorted), so
    nothing is lost where OpenAI has no name for it (an RL job's rewards, a job without a
    validation file's eval_loss)."""
    ours: set[str] = set()
    for metrics in rows:
        ours.update(name for name, value in metrics.items() if _number(value) is not None)
    return [*RESULTS_COLUMNS, *sorted(ours - set(RESULTS_COLUMNS))]


def results_csv(
    rows: Iterable[tuple[int, Mapping[str, Any]]], columns: list[str], *, validated: bool
) -> Iterator[bytes]:
    """The CSV, a chunk per step after the header: `rows` are (step, our metrics) in step
    order; an empty cell where a step has no value (evaluation runs every eval_interval)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")

    def take() -> bytes:
        out = buffer.getvalue().encode()
        buffer.seek(0)
        buffer.truncate()
        return out

    writer.writerow(columns)
    yield take()
    for step, ours in rows:
        named = openai_metrics(ours, validated=validated, step=step)
        values = {
            **ours,
            **named,
            # OpenAI's results file calls the token accuracy train_accuracy.
            "train_accuracy": named["train_mean_token_accuracy"],
        }
        writer.writerow(["" if (v := _number(values.get(c))) is None else repr(v) for c in columns])
        yield take()
