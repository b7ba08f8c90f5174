"""Retry back-off: the one formula for every "try again later" in the control plane.

    delay = backoff_s(settings.retry_backoff_s, attempt)            # a crashed or lost run
    wait = backoff_s(settings.redispatch_after_s, dispatch_count,   # a lost message
                     rng=random.Random(f"{job_id}:{dispatch_count}"))

The n-th retry waits `base_s * 2**(n-1)` (doubling stops after MAX_DOUBLINGS, i.e. at 64x),
stretched by a random factor in [1, 1 + JITTER]. The jitter only ever lengthens the wait, so
`base_s` stays a guaranteed minimum; it spreads out the retries of many jobs that failed
together (a bad node, a broker flush), which would otherwise all come back at once.
For n = 1 and 2 this is `base_s * n`, the linear back-off it replaced.
"""

from __future__ import annotations

import random

MAX_DOUBLINGS = 6
JITTER = 0.5


def backoff_s(base_s: float, n: int, *, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry `n` (1 = the first retry); 0 when `base_s` is 0.

    Pass `rng` seeded from the thing being retried to get the same delay each time it is
    computed (a check repeated every pass must not draw a new threshold each time)."""
    if base_s <= 0:
        return 0.0
    exponential = base_s * 2 ** min(max(n - 1, 0), MAX_DOUBLINGS)
    return exponential * (1.0 + JITTER * (rng or random).random())
