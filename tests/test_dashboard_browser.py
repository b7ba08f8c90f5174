"""The dashboard in a real browser: Playwright drives headless Chromium (Debian's
`chromium`, installed by scripts/install_browser.sh) against a live `lco serve` with its worker.

One test walks the whole story on a small LCO job on lco-tiny: submit through the API,
sign in with the keyboard, open the job from the jobs table by keyboard, see it move to
running, see the curves gain points while the page stays loaded (the live stream), read
rollout samples, pause and resume it, cancel from the button and see `cancelled` (each
time with only the buttons the job's state allows), download a checkpoint, then compare
its curves with a GRPO job's that ran meanwhile (the jobs and pool views show it queued
first). Another opens a finished SFT job and a finished GRPO job: each shows the charts of
what it reports (validation loss, eval reward), its files, suffix, metadata and
hyperparameters, no actions, no leftover phase, and warnings marked. A third, on a server
with no worker (nothing trains), marks a LoRA job and a full one succeeded: only the LoRA
job's row and view say its model is a LoRA adapter, with its rank, on its base. Any
browser console error or page error fails them; on each view every text must have WCAG AA
contrast and every control a name and a place in the tab order. Screenshots go to `test-artifacts/`
(gitignored); with LCO_DOCS_SCREENSHOT=1 the job view is also written to
docs/dashboard-job.png.

    .venv/bin/pytest tests/test_dashboard_browser.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from openai import OpenAI
from sqlalchemy import update

from jobs.db import make_engine, make_session_factory, transaction
from jobs.events import add_event
from jobs.ids import utcnow
from jobs.migrate import upgrade
from jobs.models import Job
from lco_core.tasks import get_task
from tests.service_fixtures import (
    ROOT,
    LiveService,
    fast_settings,
    free_port,
    lco_serve,
    new_key,
    sft_body,
    sft_lines,
    wait_for_job,
)

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = ROOT / "test-artifacts"
# Long enough to still be running when the test cancels it; small steps so points come fast.
RL_HP = {
    "max_steps": 2000,
    "batch_size": 4,
    "n_samples": 4,
    "max_completion_tokens": 4,
    "checkpoint_interval": 5,
    "rollout_engine": "hf",  # vLLM's start-up would dominate a test this short
}
RUNNING_TIMEOUT_MS = 240_000  # child start-up (torch import, model load) on a loaded machine
STEP_TIMEOUT_MS = 120_000

# WCAG 2 contrast of every element's own text against the background it sits on.
CONTRAST_JS = """
() => {
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const failures = [];
  for (const el of document.body.querySelectorAll("*")) {
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const box = el.getBoundingClientRect();
    if (!own || !box.width || !box.height || el.closest(".visually-hidden, .skip-link")) continue;
    const style = getComputedStyle(el);
    if (style.visibility === "hidden") continue;
    const fg = lum(parse(style.color)), bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
    const need = size >= 24 || (bold && size >= 18.66) ? 3 : 4.5;
    if (ratio < need) failures.push(`${el.tagName} "${el.textContent.trim().slice(0, 30)}" ${ratio.toFixed(2)}`);
  }
  return failures;
}
"""


def _browser_or_skip() -> str:
    if shutil.which(CHROMIUM) is None:
        message = f"{CHROMIUM} is missing (scripts/install_browser.sh installs Debian's chromium)"
        if os.environ.get("LCO_REQUIRE_BROWSER") == "1":  # set by scripts/test.sh
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def served(tmp_path: Path, tiny_model_path: Path) -> Iterator[tuple[LiveService, str]]:
    settings = fast_settings(tmp_path / "data")
    upgrade(settings)
    key = new_key(settings, "dash")
    with lco_serve(settings, tmp_path / "serve.log") as service:
        yield service, key


def _upload(client: httpx.Client, name: str, data: bytes) -> str:
    upload = client.post("/files", files={"file": (name, data)}, data={"purpose": "fine-tune"})
    assert upload.status_code == 200, upload.text
    return str(upload.json()["id"])


def _submit(
    service: LiveService, key: str, algorithm: str, max_steps: int, **hp: Any
) -> dict[str, Any]:
    task = get_task("addition")  # lco-tiny gets some right: the reward curve moves
    data = "".join(json.dumps(item) + "\n" for item in task.examples(64, seed=1)).encode()
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=service.base_url, headers=headers, timeout=30) as client:
        body = {
            "model": "lco-tiny",
            "training_file": _upload(client, "addition.jsonl", data),
            "suffix": algorithm,
            "method": {
                "type": "reinforcement",
                "reinforcement": {
                    "grader": task.grader(),
                    "hyperparameters": {
                        **RL_HP,
                        "algorithm": algorithm,
                        "max_steps": max_steps,
                        **hp,
                    },
                },
            },
        }
        job = client.post("/fine_tuning/jobs", json=body)
        assert job.status_code == 200, job.text
        return dict(job.json())


def _submit_sft(service: LiveService, key: str) -> dict[str, Any]:
    """A short SFT job with a validation file, a suffix and metadata (so, every field the
    job view's configuration shows), evaluated every other step."""
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=service.base_url, headers=headers, timeout=30) as client:
        body = {
            "model": "lco-tiny",
            "training_file": _upload(client, "sft-train.jsonl", sft_lines(16)),
            "validation_file": _upload(client, "sft-valid.jsonl", sft_lines(8)),
            "suffix": "sft-view",
            "metadata": {"project": "dashboard", "owner": "tests"},
            "method": {
                "type": "supervised",
                "supervised": {
                    "hyperparameters": {
                        "max_steps": 4,
                        "batch_size": 4,
                        "eval_interval": 2,
                        "checkpoint_interval": 2,
                    }
                },
            },
        }
        job = client.post("/fine_tuning/jobs", json=body)
        assert job.status_code == 200, job.text
        return dict(job.json())


def _docs_png(png: bytes, path: Path) -> None:
    """The README's screenshot, reduced to 128 colours (a third of the bytes, same look; the
    octree method keeps colours that cover few pixels, such as a legend's swatch)."""
    import io

    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    image.quantize(128, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)


# Controls a keyboard or screen-reader user cannot use: unlabeled fields, nameless buttons
# and links, anything taken out of the tab order or forced into a custom one.
CONTROLS_JS = """
() => [...document.querySelectorAll("a[href], button, input, select, textarea")]
  .filter((el) => el.getClientRects().length && !el.closest("[hidden]"))
  .filter((el) =>
    el.tabIndex !== 0 ||
    (["INPUT", "SELECT", "TEXTAREA"].includes(el.tagName)
      ? !el.labels.length && !el.getAttribute("aria-label")
      : !(el.getAttribute("aria-label") || el.textContent.trim())))
  .map((el) => el.outerHTML.slice(0, 80))
"""


ACTIONS = ("Cancel", "Pause", "Resume")


def _actions(page: Any, shown: list[str]) -> None:
    """Exactly these job controls are offered (the others are not on the page at all)."""
    from playwright.sync_api import expect

    for name in ACTIONS:
        expect(page.get_by_role("button", name=name, exact=True)).to_have_count(int(name in shown))
    group = page.get_by_role("group", name="Job controls")
    if shown:
        expect(group).to_be_visible()
    else:
        expect(group).to_be_hidden()


def _accessible(page: Any, view: str) -> None:
    failures = page.evaluate(CONTRAST_JS)
    assert not failures, f"{view}: text below WCAG AA contrast: {failures}"
    unusable = page.evaluate(CONTROLS_JS)
    assert not unusable, f"{view}: controls without a name or out of the tab order: {unusable}"


@contextmanager
def _page(executable: str, problems: list[str]) -> Iterator[Any]:
    """A Chromium page whose console errors and page errors land in `problems`."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on(
                "console",
                lambda m: (
                    problems.append(f"console.{m.type}: {m.text}") if m.type == "error" else None
                ),
            )
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            expect.set_options(timeout=15_000)
            yield page
        finally:
            browser.close()


def _sign_in(page: Any, origin: str, key: str) -> None:
    """Open the dashboard and sign in with the form (the keyboard path has its own test)."""
    page.goto(f"{origin}/dashboard")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_dashboard_follows_a_live_job_and_cancels_it(served: tuple[LiveService, str]) -> None:
    from playwright.sync_api import expect

    executable = _browser_or_skip()
    service, key = served
    job = _submit(service, key, "lco", 2000)
    # Queued behind the first (one worker), it runs while that one is paused.
    other = _submit(service, key, "grpo", 3)
    origin = service.base_url.removesuffix("/v1")
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []

    with _page(executable, problems) as page:
        # Sign in with the keyboard: the key field has focus on a fresh page.
        page.goto(f"{origin}/dashboard")
        expect(page.get_by_label("API key")).to_be_focused()
        page.keyboard.type(key)
        page.keyboard.press("Enter")
        row = page.locator(f'tr[data-job="{job["id"]}"]')
        expect(row).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('lco.apiKey')") == key
        assert page.evaluate("localStorage.length") == 0  # never kept beyond the tab
        _accessible(page, "jobs")
        page.get_by_label("Search").fill("grpo")
        expect(page.locator("#jobs-table tbody tr")).to_have_count(1)
        expect(page.locator(f'tr[data-job="{other["id"]}"]')).to_be_visible()
        page.get_by_label("Search").fill("")
        expect(page.locator("#jobs-table tbody tr")).to_have_count(2)
        # The GRPO job waits behind the LCO one: it shows its place in the queue.
        expect(page.locator(f'tr[data-job="{other["id"]}"] td.queue')).to_contain_text("#")

        # The pool view: this team's jobs in the default pool, usage against quota.
        page.get_by_role("link", name="Pools").click()
        pool = page.locator('section[data-pool="default"]')
        expect(pool).to_contain_text(other["id"])
        teams = pool.get_by_role("table", name="Teams: jobs and usage against quota")
        expect(teams.get_by_role("cell", name="dash", exact=True)).to_be_visible()
        _accessible(page, "pools")
        page.screenshot(path=str(ARTIFACTS / "dashboard-pools.png"), full_page=True)
        page.get_by_role("link", name="Jobs").click()
        expect(row).to_be_visible()

        # Reach the job's link with Tab alone; focus is visible; Enter opens it.
        link = row.get_by_role("link", name=job["id"])
        for _ in range(40):
            page.keyboard.press("Tab")
            if link.evaluate("el => el === document.activeElement"):
                break
        expect(link).to_be_focused()
        assert link.evaluate("el => getComputedStyle(el).outlineStyle") != "none"
        page.keyboard.press("Enter")
        expect(page.get_by_role("heading", level=1, name=job["id"])).to_be_visible()

        status = page.locator("#job-status .badge")
        expect(status).to_have_text("running", timeout=RUNNING_TIMEOUT_MS)
        # The page is never reloaded: a marker set now survives until the end.
        page.evaluate("window.__sameDocument = true")

        # Curves gain points live.
        reward = page.locator('figure[data-chart="reward"]')
        page.wait_for_function(
            "() => +document.querySelector('figure[data-chart=reward]').dataset.points >= 1",
            timeout=STEP_TIMEOUT_MS,
        )
        seen = int(reward.get_attribute("data-points") or 0)
        page.wait_for_function(
            "n => +document.querySelector('figure[data-chart=reward]').dataset.points > n",
            arg=seen,
            timeout=STEP_TIMEOUT_MS,
        )
        expect(reward.locator("canvas")).to_be_visible()
        for chart in ("loss", "kl", "entropy", "grad_norm", "response_len", "tokens_per_sec"):
            expect(page.locator(f'figure[data-chart="{chart}"] canvas')).to_be_visible()
        expect(page.locator("#samples tbody tr").first).to_contain_text("user:")
        expect(page.locator("#events li").first).to_be_visible()
        _actions(page, ["Cancel", "Pause"])
        _accessible(page, "job")
        page.screenshot(path=str(ARTIFACTS / "dashboard-job.png"))
        if os.environ.get("LCO_DOCS_SCREENSHOT"):
            # The README's picture: let the curves grow to step 15 first (16 points with
            # the evaluation before training, at step 0).
            page.wait_for_function(
                "() => +document.querySelector('figure[data-chart=reward]').dataset.points >= 16",
                timeout=STEP_TIMEOUT_MS,
            )
            _docs_png(page.screenshot(full_page=True), ROOT / "docs" / "dashboard-job.png")

        # Pause (the GRPO job takes the worker meanwhile), resume: the curves go on.
        page.get_by_role("button", name="Pause").click()
        # Until the worker stops it the pause can be withdrawn (Resume), not repeated.
        _actions(page, ["Cancel", "Resume"])
        expect(page.get_by_role("button", name="Resume")).to_be_focused()
        expect(status).to_have_text("paused", timeout=STEP_TIMEOUT_MS)
        _actions(page, ["Cancel", "Resume"])
        paused_at = int(reward.get_attribute("data-points") or 0)
        page.get_by_role("button", name="Resume").click()
        expect(status).to_have_text("running", timeout=RUNNING_TIMEOUT_MS)
        _actions(page, ["Cancel", "Pause"])
        page.wait_for_function(
            "n => +document.querySelector('figure[data-chart=reward]').dataset.points > n",
            arg=paused_at,
            timeout=STEP_TIMEOUT_MS,
        )

        page.get_by_role("button", name="Cancel").click()
        expect(status).to_have_text("cancelled", timeout=STEP_TIMEOUT_MS)
        _actions(page, [])
        expect(page.locator("#job-phase")).to_have_text("–")
        assert page.evaluate("window.__sameDocument === true")

        # Checkpoints download with the key (fetch, then the browser saves the tar).
        with page.expect_download() as download:
            page.locator("#checkpoints").get_by_role("button").first.click()
        assert download.value.suggested_filename.endswith(".tar")
        with tarfile.open(download.value.path()) as tar:
            assert any(name.endswith("/config.json") for name in tar.getnames())
        page.screenshot(path=str(ARTIFACTS / "dashboard-cancelled.png"), full_page=True)

        # LCO against GRPO, each curve from its own live stream.
        page.goto(f"{origin}/dashboard#/compare?a={job['id']}&b={other['id']}")
        expect(page.locator("#compare-a")).to_have_value(job["id"])
        expect(page.locator("#compare-b")).to_have_value(other["id"])
        page.wait_for_function(
            "() => document.querySelector('#compare-charts figure[data-chart=reward]')"
            ".dataset.runsWithPoints === '2'",
            timeout=RUNNING_TIMEOUT_MS,
        )
        _accessible(page, "compare")
        page.screenshot(path=str(ARTIFACTS / "dashboard-compare.png"))
        # Side by side: every metric, one column per job.
        page.get_by_label("Layout").select_option("side")
        page.get_by_role("button", name="Compare", exact=True).click()
        for run in "AB":
            column = page.locator(f'#compare-charts [data-run="{run}"]')
            expect(column.locator('figure[data-chart="reward"] canvas')).to_be_visible()
        _accessible(page, "compare side by side")
        page.screenshot(path=str(ARTIFACTS / "dashboard-compare-side.png"), full_page=True)

    with httpx.Client(
        base_url=service.base_url, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        assert client.get(f"/fine_tuning/jobs/{job['id']}").json()["status"] == "cancelled"
    assert not problems, "\n".join(problems) + "\n" + service.dump_logs()


def _chart(page: Any, chart: str) -> Any:
    return page.locator(f'#charts figure[data-chart="{chart}"]')


def _definition(dl: Any, term: str) -> Any:
    """The <dd> for a <dt> of a definition list."""
    return dl.locator(f"xpath=.//dt[normalize-space(.)='{term}']/following-sibling::dd[1]")


WARNING = "A warning the test wrote"


def test_finished_jobs_show_their_method_configuration_and_no_actions(
    served: tuple[LiveService, str],
) -> None:
    from playwright.sync_api import expect

    executable = _browser_or_skip()
    service, key = served
    sft = _submit_sft(service, key)
    # Evaluated at every step: eval_reward at steps 0 (an event only), 1 and 2.
    rl = _submit(service, key, "grpo", 2, eval_interval=1, eval_samples=8)
    client = OpenAI(base_url=service.base_url, api_key=key)
    for job in (sft, rl):
        wait_for_job(client, job["id"], {"succeeded"}, service)
    # What the job view must not repeat: a phase left over from the last attempt (as a lost
    # worker's job keeps it), and a warning that has to stand out.
    with transaction(make_session_factory(make_engine(service.settings))) as session:
        session.execute(update(Job).where(Job.id == sft["id"]).values(phase="training"))
        session.execute(update(Job).where(Job.id == rl["id"]).values(phase="requeued"))
        add_event(session, rl["id"], WARNING, level="warn")
    origin = service.base_url.removesuffix("/v1")
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []

    with _page(executable, problems) as page:
        _sign_in(page, origin, key)
        expect(page.locator(f'tr[data-job="{sft["id"]}"]')).to_be_visible()

        # The SFT job: its curves, with validation loss; none of RL's.
        page.goto(f"{origin}/dashboard#/jobs/{sft['id']}")
        expect(page.locator("#job-status .badge")).to_have_text("succeeded")
        loss = _chart(page, "loss")
        expect(loss).to_have_attribute("data-metrics", "loss eval_loss")
        expect(loss).to_have_attribute("data-points", "5")  # steps 1-4, and 0 (eval only)
        expect(loss.locator(".u-legend")).to_contain_text("validation")
        for chart in ("loss", "grad_norm", "entropy", "lr", "tokens_per_sec", "trained_tokens"):
            expect(_chart(page, chart).locator("canvas")).to_be_visible()
        for chart in ("reward", "kl", "response_len"):
            expect(_chart(page, chart)).to_be_hidden()
        expect(page.get_by_role("heading", name="Sample rollouts")).to_be_hidden()
        _actions(page, [])
        expect(page.locator("#job-phase")).to_have_text("–")
        config = page.locator("#job-config")
        training = _definition(config, "Training file")
        expect(training).to_contain_text(sft["training_file"])
        expect(training).to_contain_text("sft-train.jsonl")
        expect(_definition(config, "Validation file")).to_contain_text("sft-valid.jsonl")
        # A succeeded job's per-step results CSV (OpenAI's `result_files`).
        expect(_definition(config, "Result files")).to_contain_text("step_metrics.csv")
        expect(_definition(config, "Suffix")).to_have_text("sft-view")
        expect(_definition(config, "Metadata")).to_have_text(
            re.compile(r"project: dashboard\s*owner: tests")
        )
        hp = page.locator("#hyperparameters")
        expect(_definition(hp, "max_steps")).to_have_text("4")
        expect(_definition(hp, "eval_interval")).to_have_text("2")
        expect(_definition(hp, "lr_schedule")).to_have_text("constant")
        _accessible(page, "SFT job")
        page.screenshot(path=str(ARTIFACTS / "dashboard-sft-job.png"), full_page=True)

        # The GRPO job: RL's curves, with the evaluations' reward; the warning marked.
        page.goto(f"{origin}/dashboard#/jobs/{rl['id']}")
        expect(page.locator("#job-status .badge")).to_have_text("succeeded")
        reward = _chart(page, "reward")
        expect(reward).to_have_attribute("data-metrics", "reward_mean reward_std eval_reward")
        expect(reward).to_have_attribute("data-points", "3")  # steps 1-2, and 0 (eval only)
        expect(reward.locator(".u-legend")).to_contain_text("eval (greedy)")
        for chart in ("reward", "loss", "kl", "grad_norm", "response_len", "lr"):
            expect(_chart(page, chart).locator("canvas")).to_be_visible()
        expect(loss).to_have_attribute("data-metrics", "loss")  # no validation loss in RL
        expect(page.locator("#samples tbody tr").first).to_contain_text("user:")
        _actions(page, [])
        expect(page.locator("#job-phase")).to_have_text("–")
        expect(_definition(page.locator("#job-config"), "Grader")).to_contain_text(
            rl["method"]["reinforcement"]["grader"]["type"]
        )
        expect(_definition(hp, "algorithm")).to_have_text("grpo")
        # (The run may warn of its own, of steps without reward variance.)
        warning = page.locator("#events li.warn", has_text=WARNING)
        expect(warning).to_contain_text(f"Warning: {WARNING}")
        assert warning.evaluate("el => getComputedStyle(el).borderLeftStyle") == "solid"
        expect(page.locator("#events-marked")).to_have_text(re.compile(r"^\d+ warnings?$"))
        _accessible(page, "RL job")
        page.screenshot(path=str(ARTIFACTS / "dashboard-rl-job.png"), full_page=True)
    assert not problems, "\n".join(problems) + "\n" + service.dump_logs()


@pytest.fixture
def served_without_worker(
    tmp_path: Path, tiny_model_path: Path
) -> Iterator[tuple[LiveService, str]]:
    """`lco serve --no-worker`: jobs stay as the test writes them (nothing trains)."""
    settings = fast_settings(tmp_path / "data")
    upgrade(settings)
    key = new_key(settings, "dash")
    port = free_port()
    service = LiveService(f"http://127.0.0.1:{port}/v1", settings)
    service.start(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port), "--no-worker"],
        tmp_path / "serve.log",
    )
    try:
        service.wait_healthy()
        yield service, key
    finally:
        service.stop()


def test_a_lora_job_shows_its_adapter_and_base(
    served_without_worker: tuple[LiveService, str],
) -> None:
    """A succeeded LoRA job: the jobs table and the job view say its model is a LoRA adapter
    (with its rank) on its base; a full fine-tune's say nothing of the kind."""
    from playwright.sync_api import expect

    executable = _browser_or_skip()
    service, key = served_without_worker
    headers = {"Authorization": f"Bearer {key}"}
    jobs: dict[str, str] = {}
    with httpx.Client(base_url=service.base_url, headers=headers, timeout=30) as client:
        file_id = _upload(client, "sft.jsonl", sft_lines(8))
        for kind, hp in (("lora", {"lora": {"r": 8}}), ("full", {})):
            job = client.post("/fine_tuning/jobs", json=sft_body(file_id, **hp))
            assert job.status_code == 200, job.text
            jobs[kind] = job.json()["id"]
    # Finished as a worker would leave them (no worker runs here: nothing trains).
    with transaction(make_session_factory(make_engine(service.settings))) as session:
        for kind, job_id in jobs.items():
            session.execute(
                update(Job)
                .where(Job.id == job_id)
                .values(
                    status="succeeded",
                    fine_tuned_model=f"ft:lco-tiny:dash:{kind}::{job_id}",
                    finished_at=utcnow(),
                )
            )
    origin = service.base_url.removesuffix("/v1")
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []

    with _page(executable, problems) as page:
        _sign_in(page, origin, key)
        model = page.locator(f'tr[data-job="{jobs["lora"]}"] td').first
        expect(model).to_have_text("lco-tiny · LoRA adapter (r=8)")
        expect(page.locator(f'tr[data-job="{jobs["full"]}"] td').first).to_have_text("lco-tiny")
        _accessible(page, "jobs with a LoRA job")

        page.goto(f"{origin}/dashboard#/jobs/{jobs['lora']}")
        expect(page.locator("#job-status .badge")).to_have_text("succeeded")
        summary = page.locator("#job-summary")
        expect(_definition(summary, "Fine-tuned model")).to_have_text(
            f"ft:lco-tiny:dash:lora::{jobs['lora']} · LoRA adapter (r=8) on lco-tiny"
        )
        _accessible(page, "LoRA job")
        page.screenshot(path=str(ARTIFACTS / "dashboard-lora-job.png"))

        page.goto(f"{origin}/dashboard#/jobs/{jobs['full']}")
        expect(page.locator("#job-status .badge")).to_have_text("succeeded")
        expect(_definition(summary, "Fine-tuned model")).to_have_text(
            f"ft:lco-tiny:dash:full::{jobs['full']}"
        )
        expect(page.locator("#job-adapter")).to_have_count(0)
    assert not problems, "\n".join(problems) + "\n" + service.dump_logs()
