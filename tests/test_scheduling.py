"""The fair-share scheduler (`jobs.scheduling.schedule`) driven by a simulated clock: shares
over a window, priorities inside a team, idle share lent and returned, no starvation, and
a position and estimated start for every queued job."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from jobs.scheduling import (
    WAITING_FOR_CAPACITY,
    WAITING_FOR_LARGER_WORKER,
    WAITING_FOR_QUOTA,
    WAITING_FOR_RETRY,
    WAITING_FOR_WORKER,
    Plan,
    Pool,
    Queued,
    QueueState,
    Running,
    TeamPolicy,
    clamp_priority,
    schedule,
)

HOUR = 3600.0


@dataclass
class SimJob:
    id: str
    team: str
    gpus: int
    duration: float
    priority: str
    submitted: float
    seq: int
    start: float | None = None


@dataclass
class Sim:
    """A pool of `capacity` GPUs run by the scheduler; admitted jobs start at once."""

    capacity: int
    teams: dict[str, TeamPolicy]
    window: float = 4 * HOUR
    largest_worker: int | None = None
    now: float = 0.0
    queued: list[SimJob] = field(default_factory=list)
    running: list[SimJob] = field(default_factory=list)
    done: list[SimJob] = field(default_factory=list)
    started: list[SimJob] = field(default_factory=list)
    _seq: int = 0

    def submit(
        self, team: str, n: int, *, gpus: int = 1, duration: float = 300, priority: str = "normal"
    ) -> list[SimJob]:
        jobs = []
        for _ in range(n):
            self._seq += 1
            jobs.append(
                SimJob(f"{team}-{self._seq}", team, gpus, duration, priority, self.now, self._seq)
            )
        self.queued += jobs
        return jobs

    def gpu_seconds(self, team: str, start: float, end: float) -> float:
        total = 0.0
        for job in [*self.done, *self.running]:
            if job.team != team or job.start is None:
                continue
            stop = min(job.start + job.duration, self.now)
            total += job.gpus * max(0.0, min(stop, end) - max(job.start, start))
        return total

    def held(self, team: str) -> int:
        return sum(j.gpus for j in self.running if j.team == team)

    def state(self) -> QueueState:
        return QueueState(
            now=self.now,
            pools={"p": Pool("p", self.capacity, self.largest_worker or self.capacity)},
            teams=self.teams,
            running=[
                Running(j.id, j.team, "p", j.gpus, j.start + j.duration - self.now)  # type: ignore[operator]
                for j in self.running
            ],
            queued=[
                Queued(j.id, j.team, "p", j.gpus, j.priority, j.submitted, j.seq, j.duration)
                for j in self.queued
            ],
            usage={t: self.gpu_seconds(t, self.now - self.window, self.now) for t in self.teams},
        )

    def tick(self) -> Plan:
        plan = schedule(self.state())
        by_id = {j.id: j for j in self.queued}
        for job_id in plan.admit:
            job = by_id[job_id]
            job.start = self.now
            self.queued.remove(job)
            self.running.append(job)
            self.started.append(job)
        assert sum(j.gpus for j in self.running) <= self.capacity
        return plan

    def advance_to(self, until: float) -> None:
        """Run events (finishes, then a scheduling pass) up to `until`."""
        self.tick()
        while True:
            ends = [j.start + j.duration for j in self.running]  # type: ignore[operator]
            nxt = min(ends, default=None)
            if nxt is None or nxt > until:
                self.now = until
                self.tick()
                return
            self.now = nxt
            for job in [j for j in self.running if j.start + j.duration <= self.now]:  # type: ignore[operator]
                self.running.remove(job)
                self.done.append(job)
            self.tick()


def test_three_teams_with_shares_2_1_1_get_gpu_time_within_10_percent() -> None:
    rng = random.Random(7)
    teams = {t: TeamPolicy(t, share=s) for t, s in (("a", 2.0), ("b", 1.0), ("c", 1.0))}
    sim = Sim(capacity=8, teams=teams)
    # Bursts of mixed jobs every half hour keep every team backlogged for 8 hours.
    while sim.now < 8 * HOUR:
        for team in teams:
            for _ in range(rng.randint(10, 25)):
                sim.submit(team, 1, gpus=rng.choice([1, 1, 2]), duration=rng.uniform(60, 900))
        sim.advance_to(sim.now + HOUR / 2)
        for team in teams:
            assert any(j.team == team for j in sim.queued), "every team stays backlogged"
    start = sim.now - sim.window
    used = {t: sim.gpu_seconds(t, start, sim.now) for t in teams}
    total = sum(used.values())
    assert total >= 0.9 * sim.capacity * sim.window  # busy (no backfill leaves a little idle)
    for team, policy in teams.items():
        target = policy.share / sum(p.share for p in teams.values())
        assert abs(used[team] / total - target) <= 0.10 * target, (team, used[team] / total)


def test_one_pass_interleaves_teams_by_share() -> None:
    teams = {t: TeamPolicy(t, share=s) for t, s in (("a", 2.0), ("b", 1.0), ("c", 1.0))}
    sim = Sim(capacity=4, teams=teams)
    for team in teams:
        sim.submit(team, 10)
    sim.tick()
    assert sorted(j.team for j in sim.running) == ["a", "a", "b", "c"]


def test_priorities_order_jobs_inside_a_team() -> None:
    sim = Sim(capacity=1, teams={"a": TeamPolicy("a")})
    (blocker,) = sim.submit("a", 1, duration=100)
    sim.tick()
    low = sim.submit("a", 1, priority="low")[0]
    normal = sim.submit("a", 1, priority="normal")[0]
    high = sim.submit("a", 1, priority="high")[0]
    plan = sim.tick()
    assert [plan.slots[j.id].position for j in (high, normal, low)] == [1, 2, 3]
    sim.advance_to(2000)
    assert [j.id for j in sim.started] == [blocker.id, high.id, normal.id, low.id]


def test_priority_is_clamped_by_team_policy() -> None:
    assert clamp_priority("high", "normal") == "normal"
    assert clamp_priority("low", "normal") == "low"
    assert clamp_priority("high", "high") == "high"


def test_idle_share_is_used_by_others_and_returned_when_the_team_submits() -> None:
    teams = {t: TeamPolicy(t, share=1.0) for t in ("a", "b", "c")}
    sim = Sim(capacity=6, teams=teams)
    sim.submit("a", 200, duration=600)
    sim.submit("b", 200, duration=600)
    sim.advance_to(2 * HOUR)
    # c is idle: a and b use the whole pool between them.
    assert sim.held("a") + sim.held("b") == 6 and sim.held("a") == sim.held("b") == 3
    sim.submit("c", 50, duration=600)
    # Running jobs are not preempted: c gets every GPU that frees until it holds its share.
    sim.advance_to(2 * HOUR + 600)
    assert sim.held("c") >= 2
    sim.advance_to(4 * HOUR)
    hour = sim.now - HOUR
    got = {t: sim.gpu_seconds(t, hour, sim.now) for t in teams}
    assert got["c"] >= 0.9 * sum(got.values()) / 3


def test_no_starvation_of_a_small_share_team() -> None:
    teams = {"big1": TeamPolicy("big1", 10.0), "big2": TeamPolicy("big2", 10.0)}
    teams["tiny"] = TeamPolicy("tiny", 0.1)
    sim = Sim(capacity=4, teams=teams)
    sim.submit("big1", 300, duration=300)
    sim.submit("big2", 300, duration=300)
    sim.advance_to(HOUR)
    (job,) = sim.submit("tiny", 1, duration=300)
    sim.advance_to(2 * HOUR)
    # It has used nothing in the window, so it is first when the next GPU frees.
    assert job.start is not None and job.start - job.submitted <= 300


def test_no_starvation_of_a_low_priority_job_by_a_stream_of_high_ones() -> None:
    sim = Sim(capacity=1, teams={"a": TeamPolicy("a")})
    (low,) = sim.submit("a", 1, priority="low", duration=60)
    for _ in range(40):  # a new high job every 5 minutes, each running 5 minutes
        sim.submit("a", 1, priority="high", duration=300)
        sim.advance_to(sim.now + 300)
    assert low.start is not None  # aged past the high ones (one level per aging_s = 1 h)
    assert low.start <= 2 * HOUR + 600


def test_no_starvation_of_a_big_job_by_small_ones() -> None:
    sim = Sim(capacity=4, teams={"a": TeamPolicy("a"), "b": TeamPolicy("b")})
    sim.submit("a", 4, duration=600)
    sim.advance_to(10)
    (big,) = sim.submit("b", 1, gpus=4, duration=600)
    for _ in range(20):
        sim.submit("a", 4, duration=600)
        sim.advance_to(sim.now + 300)
    # No backfill: once b is next, freed GPUs wait for its four.
    assert big.start is not None and big.start <= 600 + 10


def test_quota_holds_jobs_and_frees_capacity_for_others() -> None:
    teams = {"a": TeamPolicy("a", max_gpus=2), "b": TeamPolicy("b")}
    sim = Sim(capacity=8, teams=teams)
    a_jobs = sim.submit("a", 5)
    plan = sim.tick()
    assert sim.held("a") == 2
    assert {plan.slots[j.id].reason for j in a_jobs if j.start is None} == {WAITING_FOR_QUOTA}
    sim.submit("b", 5)
    sim.tick()
    assert sim.held("b") == 5  # a's quota does not hold the pool


def test_a_job_bigger_than_any_worker_steps_aside() -> None:
    sim = Sim(capacity=8, largest_worker=2, teams={"a": TeamPolicy("a")})
    (huge,) = sim.submit("a", 1, gpus=4)
    small = sim.submit("a", 2)
    plan = sim.tick()
    assert all(j.start == 0 for j in small)
    slot = plan.slots[huge.id]
    assert (slot.reason, slot.estimated_start) == (WAITING_FOR_LARGER_WORKER, None)
    assert slot.message is not None and "4 GPUs" in slot.message and "has 2" in slot.message


def test_no_capacity_means_no_admission_and_no_estimate() -> None:
    sim = Sim(capacity=0, teams={"a": TeamPolicy("a")})
    jobs = sim.submit("a", 3)
    plan = sim.tick()
    assert plan.admit == []
    assert [plan.slots[j.id].position for j in jobs] == [1, 2, 3]
    assert {(s.reason, s.estimated_start) for s in plan.slots.values()} == {
        (WAITING_FOR_CAPACITY, None)
    }


def test_retry_back_off_holds_a_job_until_its_time() -> None:
    state = QueueState(
        now=100.0,
        pools={"p": Pool("p", 1, 1)},
        teams={"a": TeamPolicy("a")},
        running=[],
        queued=[Queued("j", "a", "p", 1, "normal", 0.0, 1, 60.0, not_before=130.0)],
        usage={},
    )
    plan = schedule(state)
    assert plan.admit == []
    assert plan.slots["j"].reason == WAITING_FOR_RETRY
    assert plan.slots["j"].estimated_start == 130.0


def test_admitted_jobs_waiting_for_their_worker_lead_the_queue() -> None:
    state = QueueState(
        now=0.0,
        pools={"p": Pool("p", 2, 1)},
        teams={"a": TeamPolicy("a")},
        running=[Running("r", "a", "p", 1, 100.0, claimed=False)],
        queued=[Queued(f"q{i}", "a", "p", 1, "normal", 0.0, i, 100.0) for i in range(3)],
        usage={},
    )
    plan = schedule(state)
    assert plan.admit == ["q0"]
    assert [(s.position, s.reason) for s in (plan.slots[k] for k in ("r", "q0", "q1", "q2"))] == [
        (1, WAITING_FOR_WORKER),
        (2, WAITING_FOR_WORKER),
        (3, WAITING_FOR_CAPACITY),
        (4, WAITING_FOR_CAPACITY),
    ]
    assert plan.slots["q1"].estimated_start == 100.0


def test_every_queued_job_has_a_position_and_eta_that_move_as_jobs_finish() -> None:
    teams = {"a": TeamPolicy("a"), "b": TeamPolicy("b")}
    sim = Sim(capacity=2, teams=teams)
    sim.submit("a", 4, duration=100)
    sim.submit("b", 4, duration=100)
    sim.tick()  # two start; a plan of the same state shows the rest of the queue
    before = schedule(sim.state())
    waiting = list(sim.queued)
    assert len(waiting) == 6
    positions = sorted(before.slots[j.id].position for j in waiting)
    assert positions == list(range(1, 7))
    for job in waiting:
        slot = before.slots[job.id]
        assert slot.ahead == slot.position - 1
        # Two GPUs, 100 s jobs: the k-th in line starts after ceil(k/2) rounds.
        assert slot.estimated_start == 100.0 * ((slot.position + 1) // 2)
    sim.advance_to(100)  # the first two finish, the next two start
    after = schedule(sim.state())
    assert len(sim.queued) == 4
    for job in sim.queued:
        assert after.slots[job.id].position == before.slots[job.id].position - 2
        assert after.slots[job.id].estimated_start == before.slots[job.id].estimated_start
    assert [j.start for j in waiting if j not in sim.queued] == [100.0, 100.0]
