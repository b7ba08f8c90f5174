"""The fair-share scheduler as a pure function: queue state, usage and clock in, a plan out.

    plan = schedule(QueueState(now=..., pools=..., teams=..., running=..., queued=..., usage=...))
    plan.admit                    # job ids to admit now (in order)
    plan.slots[job_id]            # position, ahead, reason, estimated_start of every queued
                                  # job (admitted ones not yet claimed included)

No database, no wall clock: `jobs.queue` builds the state from the rows and applies the
plan; the tests drive it with a simulated clock.

The rules, per pool:
- A job fits when the pool has its GPUs free and its team stays within `max_gpus`.
- The next job comes from the team with the smallest weighted usage: (GPU-seconds used over
  the window + `charge_s` per GPU it holds now) / share. Charging held GPUs makes a single
  pass interleave teams by share instead of filling the pool with whoever is first, and
  the window makes a team that was idle come first when it returns.
- Inside a team: higher priority first, then older; waiting ages a job by one priority
  level every `aging_s`, so a low job is never starved by a stream of high ones.
- No backfill: when the chosen job does not fit the free GPUs, the pool waits for it (a
  big job is not starved by small ones). Jobs that can never fit (more GPUs than the
  pool's largest worker) and jobs held by their quota or a retry back-off step aside.
- The same rules, run forward over running jobs' expected finishes, give each queued job
  its position and estimated start.
"""

from __future__ import annotations

import heapq
from collections import defaultdict
from dataclasses import dataclass, field

PRIORITIES = ("low", "normal", "high")
PRIORITY_RANK = {name: rank for rank, name in enumerate(PRIORITIES)}

# Reasons a queued job waits (status_details.reason).
WAITING_FOR_CAPACITY = "waiting_for_capacity"
WAITING_FOR_QUOTA = "waiting_for_quota"
WAITING_FOR_RETRY = "waiting_for_retry"
WAITING_FOR_WORKER = "waiting_for_worker"  # admitted, not yet claimed by a worker
# More GPUs than any live worker of the pool has: it waits for a larger worker to join.
WAITING_FOR_LARGER_WORKER = "waiting_for_larger_worker"


def clamp_priority(asked: str, ceiling: str) -> str:
    """A team's jobs never rank above its policy's ceiling."""
    return asked if PRIORITY_RANK[asked] <= PRIORITY_RANK[ceiling] else ceiling


@dataclass(frozen=True)
class Pool:
    name: str
    capacity: int  # GPUs of the live workers
    largest_worker: int  # the most GPUs one job can get


@dataclass(frozen=True)
class TeamPolicy:
    id: str
    share: float = 1.0
    max_gpus: int | None = None


@dataclass(frozen=True)
class Running:
    """A running job, or an admitted one not yet claimed (it holds its GPUs either way)."""

    id: str
    team: str
    pool: str
    gpus: int
    remaining_s: float  # expected seconds until it frees its GPUs
    claimed: bool = True  # False: admitted, its worker has not picked it up yet
    admitted_seq: int = 0  # for the unclaimed: their order at the front of the queue


@dataclass(frozen=True)
class Queued:
    id: str
    team: str
    pool: str
    gpus: int
    priority: str
    queued_at: float  # epoch seconds; the age used for ordering and aging
    seq: int  # submission order, the last tie-break
    expected_s: float  # expected run time once started
    not_before: float | None = None  # retry back-off


@dataclass(frozen=True)
class QueueState:
    now: float
    pools: dict[str, Pool]
    teams: dict[str, TeamPolicy]
    running: list[Running]
    queued: list[Queued]
    usage: dict[str, float]  # GPU-seconds per team over the window
    charge_s: float = 600.0
    aging_s: float = 3600.0


@dataclass(frozen=True)
class Slot:
    position: int  # 1-based place in its pool's queue
    ahead: int  # queued jobs before it in that pool
    reason: str
    estimated_start: float | None  # None: cannot be estimated (no capacity)
    message: str | None = None  # the reason in words, where numbers help


@dataclass
class Plan:
    admit: list[str] = field(default_factory=list)
    slots: dict[str, Slot] = field(default_factory=dict)


def _order_key(job: Queued, aging_s: float) -> tuple[float, int]:
    # rank + age/aging_s, highest first; the difference between two jobs does not depend on
    # the clock, so one static sort serves the whole simulation.
    return (-(PRIORITY_RANK[job.priority] - job.queued_at / aging_s), job.seq)


def _weighted(usage: float, policy: TeamPolicy) -> float:
    return usage / max(policy.share, 1e-9)


def schedule(state: QueueState) -> Plan:
    """Admissions for `state.now` and a slot (position, reason, ETA) for every queued job."""
    plan = Plan()
    teams = dict(state.teams)
    jobs: list[Running | Queued] = [*state.running, *state.queued]
    for job in jobs:
        teams.setdefault(job.team, TeamPolicy(id=job.team))
    held: dict[str, int] = defaultdict(int)  # GPUs per team, all pools
    for run in state.running:
        held[run.team] += run.gpus
    for name in sorted({*state.pools, *(j.pool for j in jobs)}):
        pool = state.pools.get(name, Pool(name, 0, 0))
        _schedule_pool(state, pool, teams, held, plan)
    return plan


def _schedule_pool(
    state: QueueState,
    pool: Pool,
    teams: dict[str, TeamPolicy],
    held_all: dict[str, int],
    plan: Plan,
) -> None:
    now = state.now
    running = [r for r in state.running if r.pool == pool.name]
    waiting = [q for q in state.queued if q.pool == pool.name]
    # Simulated copies: the forward run must not change what other pools see.
    held = dict(held_all)
    usage = {t: state.usage.get(t, 0.0) + state.charge_s * held.get(t, 0) for t in teams}
    free = pool.capacity - sum(r.gpus for r in running)
    finishes: list[tuple[float, int, str, int]] = []
    for i, run in enumerate(running):
        heapq.heappush(finishes, (now + max(run.remaining_s, 0.0), i, run.team, run.gpus))

    never = [q for q in waiting if q.gpus > pool.largest_worker]
    per_team: dict[str, list[Queued]] = defaultdict(list)
    for job in sorted(
        (q for q in waiting if q.gpus <= pool.largest_worker),
        key=lambda q: _order_key(q, state.aging_s),
    ):
        per_team[job.team].append(job)

    order: list[tuple[Queued, float | None]] = []
    held_now: dict[str, int] | None = None  # GPUs per team once this pass's admissions start
    t = now
    seq = len(running)
    while per_team:
        choice = _pick(per_team, teams, held, usage, t)
        if choice is not None and choice.gpus <= free:
            per_team[choice.team].remove(choice)
            if not per_team[choice.team]:
                del per_team[choice.team]
            order.append((choice, t))
            if t == now:
                plan.admit.append(choice.id)
                held_all[choice.team] = held_all.get(choice.team, 0) + choice.gpus
            free -= choice.gpus
            held[choice.team] = held.get(choice.team, 0) + choice.gpus
            usage[choice.team] = usage.get(choice.team, 0.0) + state.charge_s * choice.gpus
            heapq.heappush(finishes, (t + choice.expected_s, seq, choice.team, choice.gpus))
            seq += 1
            continue
        # Nothing starts at t: move to the next finish or the next end of a back-off.
        wakeups = [
            q.not_before
            for jobs in per_team.values()
            for q in jobs
            if q.not_before is not None and q.not_before > t
        ]
        next_finish = finishes[0][0] if finishes else None
        candidates = [x for x in (next_finish, min(wakeups, default=None)) if x is not None]
        if held_now is None:
            held_now = dict(held)
        if not candidates or pool.capacity <= 0:
            break  # no capacity at all: the rest cannot be estimated
        t = max(t, min(candidates))
        while finishes and finishes[0][0] <= t:
            _, _, team, gpus = heapq.heappop(finishes)
            free += gpus
            held[team] = held.get(team, 0) - gpus

    reasons = _reasons(waiting, teams, held if held_now is None else held_now, now)
    stuck = [q for jobs in per_team.values() for q in jobs]
    stuck.sort(key=lambda q: (_weighted(usage.get(q.team, 0.0), teams[q.team]), q.seq))
    # Admitted jobs still waiting for their worker come first, then the simulated order.
    position = 0
    for run in sorted((r for r in running if not r.claimed), key=lambda r: r.admitted_seq):
        position += 1
        plan.slots[run.id] = Slot(position, position - 1, WAITING_FOR_WORKER, now)
    admitted = set(plan.admit)
    too_large = {q.id for q in never}
    for job, start in [*order, *((q, None) for q in stuck), *((q, None) for q in never)]:
        position += 1
        reason = WAITING_FOR_WORKER if job.id in admitted else reasons[job.id]
        message = None
        if job.id in too_large and pool.largest_worker > 0 and reason == WAITING_FOR_CAPACITY:
            reason = WAITING_FOR_LARGER_WORKER
            message = (
                f"the job asks for {job.gpus} GPUs and the largest live worker of pool "
                f"{pool.name!r} has {pool.largest_worker}: it waits for a larger worker"
            )
        plan.slots[job.id] = Slot(position, position - 1, reason, start, message)


def _reasons(
    waiting: list[Queued], teams: dict[str, TeamPolicy], held: dict[str, int], now: float
) -> dict[str, str]:
    """Why each job waits at `now`, after this pass's admissions."""
    reasons = {}
    for job in waiting:
        limit = teams[job.team].max_gpus
        if job.not_before is not None and job.not_before > now:
            reasons[job.id] = WAITING_FOR_RETRY
        elif limit is not None and held.get(job.team, 0) + job.gpus > limit:
            reasons[job.id] = WAITING_FOR_QUOTA
        else:
            reasons[job.id] = WAITING_FOR_CAPACITY
    return reasons


def _pick(
    per_team: dict[str, list[Queued]],
    teams: dict[str, TeamPolicy],
    held: dict[str, int],
    usage: dict[str, float],
    t: float,
) -> Queued | None:
    """The head job of the team with the smallest weighted usage among teams that may run."""
    best: tuple[float, tuple[float, int], Queued] | None = None
    for team_id, jobs in per_team.items():
        head = next((q for q in jobs if q.not_before is None or q.not_before <= t), None)
        if head is None:
            continue
        policy = teams[team_id]
        if policy.max_gpus is not None and held.get(team_id, 0) + head.gpus > policy.max_gpus:
            continue
        key = (_weighted(usage.get(team_id, 0.0), policy), (head.queued_at, head.seq))
        if best is None or key < best[:2]:
            best = (key[0], key[1], head)
    return None if best is None else best[2]
