"""The one retry back-off (jobs.backoff): exponential, capped, jittered upwards only."""

from __future__ import annotations

import random

from jobs.backoff import JITTER, MAX_DOUBLINGS, backoff_s


def test_each_retry_waits_between_the_exponential_delay_and_its_jittered_stretch() -> None:
    rng = random.Random(0)
    for n in range(0, 12):
        floor = 10.0 * 2 ** min(max(n - 1, 0), MAX_DOUBLINGS)
        delays = [backoff_s(10.0, n, rng=rng) for _ in range(500)]
        assert all(floor <= d <= floor * (1 + JITTER) for d in delays), (n, min(delays))
        # The jitter really spreads: retries of jobs that failed together do not coincide.
        assert max(delays) - min(delays) > 0.8 * floor * JITTER


def test_the_first_retries_match_the_linear_back_off_and_doubling_stops_at_64x() -> None:
    no_jitter = random.Random(0)
    no_jitter.random = lambda: 0.0  # type: ignore[method-assign]
    assert [backoff_s(10.0, n, rng=no_jitter) for n in (1, 2, 3, 7, 8, 50)] == [
        10.0,
        20.0,
        40.0,
        640.0,
        640.0,
        640.0,
    ]


def test_no_base_means_no_wait_and_a_seeded_rng_repeats_its_delay() -> None:
    assert backoff_s(0.0, 5) == 0.0
    first = backoff_s(120.0, 3, rng=random.Random("ftjob-x:3"))
    assert first == backoff_s(120.0, 3, rng=random.Random("ftjob-x:3"))
    assert first != backoff_s(120.0, 3, rng=random.Random("ftjob-y:3"))
