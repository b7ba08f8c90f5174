"""Where artifacts live on disk, resolved server-side from ids under the team's root.

    data_dir/teams/<team_id>/files/<file_id>.jsonl
    data_dir/teams/<team_id>/jobs/<job_id>/            (the run's output_dir)
    data_dir/teams/<team_id>/jobs/<job_id>/checkpoints/step-N/

User text never becomes a path: ids are checked against a strict pattern and every
resolved path is checked to stay under its root.
"""

from __future__ import annotations

import re
from pathlib import Path

from jobs.settings import Settings

_ID = re.compile(r"^[A-Za-z]+-[A-Za-z0-9]{1,64}$")


def _checked(part: str) -> str:
    if not _ID.match(part):
        raise ValueError(f"not an object id: {part!r}")
    return part


class Storage:
    """Path arithmetic for one data dir; creates nothing until asked."""

    def __init__(self, settings: Settings):
        self.root = (settings.data_dir / "teams").resolve()

    def team_root(self, team_id: str) -> Path:
        return self.root / _checked(team_id)

    def file_path(self, team_id: str, file_id: str) -> Path:
        return self.team_root(team_id) / "files" / f"{_checked(file_id)}.jsonl"

    def job_dir(self, team_id: str, job_id: str) -> Path:
        return self.team_root(team_id) / "jobs" / _checked(job_id)

    def resolve_in_job(self, team_id: str, job_id: str, rel_path: str) -> Path:
        """`rel_path` (as stored by the worker) under the job dir, refusing any escape."""
        base = self.job_dir(team_id, job_id)
        path = (base / rel_path).resolve()
        if not path.is_relative_to(base):
            raise ValueError("path escapes the job dir")
        return path

    def relative_to_job(self, team_id: str, job_id: str, path: Path) -> str:
        """The stored form of a path the training process reported (must be in the job dir)."""
        base = self.job_dir(team_id, job_id)
        resolved = path.resolve()
        if not resolved.is_relative_to(base):
            raise ValueError(f"{path} is outside the job dir")
        return str(resolved.relative_to(base))
