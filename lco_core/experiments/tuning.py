"""The stability study's tuning phase: the same small grid budget for every algorithm, and
the rule that picks each one's setting, both fixed before any run.

    grid = tuning_grid("lco_kld", cfg)          # [Candidate(lr 0.3x, beta 2), ...]
    chosen = choose(scores)                      # by the rule in RULE

Each algorithm gets `len(cfg.lr_factors) x 2` candidates. LCO's: the learning rate as a
multiple of the model's default for the algorithm (`learning_rate_multiplier`, so a choice
made on lco-tiny carries over to a larger model's own default) times two values of its
target temperature `beta`. The others get the same number of learning rates, log-spaced
over the same range: REINFORCE has no second knob, and PPO's and GRPO's clip `epsilon` is
inert where the tuning runs (one update per batch: the ratio to pi_old is exactly 1, so
the clip never binds and a grid over it would spend half their budget on duplicate runs).
They keep the clip at its default, 0.2, in the reuse setting too.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lco_core.experiments.analysis import RunSummary
    from lco_core.experiments.stability import StudyConfig

# Each algorithm's own knob (job spec field) besides the learning rate, where it acts with
# one update per batch.
KNOB = {"lco_kld": "beta", "lco_mse": "beta", "lco_logcosh": "beta"}

RULE = (
    "per algorithm, the candidate with the highest mean over the tuning seeds of its final "
    "greedy reward (mean of the last 3 evaluations); a candidate any of whose tuning runs "
    "collapsed (reward collapse, entropy collapse or entropy explosion) ranks below every "
    "candidate that did not; ties (within one held-out prompt's worth of reward) go to the "
    "learning rate nearest the default, then to the lower one, then to the knob value listed "
    "first (the job default)"
)


@dataclass(frozen=True)
class Candidate:
    """One point of an algorithm's grid: a learning-rate multiplier and its knob's value."""

    lr_factor: float
    knob: str | None = None
    value: float | None = None

    @property
    def label(self) -> str:
        knob = f"-{self.knob}{self.value:g}" if self.knob else ""
        return f"lr{self.lr_factor:g}x{knob}"

    def hyperparameters(self) -> dict[str, Any]:
        hp: dict[str, Any] = {"learning_rate_multiplier": self.lr_factor}
        if self.knob is not None:
            hp[self.knob] = self.value
        return hp

    def describe(self) -> str:
        knob = f", {self.knob} {self.value:g}" if self.knob else ""
        return f"lr {self.lr_factor:g}x default{knob}"


def tuning_grid(algorithm: str, cfg: StudyConfig) -> list[Candidate]:
    """The candidates `algorithm` is tuned over (the same count for every algorithm)."""
    knob = KNOB.get(algorithm)
    if knob is not None:
        values = cfg.knob_values[knob]
        return [Candidate(f, knob, v) for f in cfg.lr_factors for v in values]
    n = len(cfg.lr_factors) * max(len(v) for v in cfg.knob_values.values())
    low, high = min(cfg.lr_factors), max(cfg.lr_factors)
    if n == 1:
        return [Candidate(low)]
    return [Candidate(_round(low * (high / low) ** (i / (n - 1)))) for i in range(n)]


def _round(x: float) -> float:
    """Two significant digits: factors read as 0.3x, 0.48x, ... in the report."""
    return float(f"{x:.2g}")


@dataclass(frozen=True)
class Score:
    candidate: Candidate
    final_eval: float  # mean over tuning seeds
    unstable: int  # tuning runs with a collapse or an entropy explosion
    n: int


def score(candidate: Candidate, runs: list[RunSummary]) -> Score:
    return Score(
        candidate=candidate,
        final_eval=statistics.fmean(r.final_eval for r in runs) if runs else math.nan,
        unstable=sum(r.unstable for r in runs),
        n=len(runs),
    )


def choose(scores: list[Score], tie: float) -> Score:
    """The winner by RULE; `tie` is the reward difference that counts as equal."""
    finished = [s for s in scores if s.n > 0 and not math.isnan(s.final_eval)]
    if not finished:
        raise ValueError("no finished tuning runs to choose from")
    stable = [s for s in finished if s.unstable == 0] or finished
    best = max(s.final_eval for s in stable)
    near = [s for s in stable if s.final_eval >= best - tie]
    # min() keeps the first of equal keys: grid order, whose first knob value is the default.
    return min(near, key=lambda s: (abs(math.log(s.candidate.lr_factor)), s.candidate.lr_factor))
