"""The dashboard in a real browser: Playwright drives headless Chromium (Debian's
`chromium`, installed by scripts/install.sh) against a live `lco serve` with its worker.

One test walks the whole story on a small LCO job on lco-tiny: submit through the API,
sign in with the keyboard, open the job from the jobs table by keyboard, see it move to
running, see the curves gain points while the page stays loaded (the live stream), read
rollout samples, pause and resume it, cancel from the button and see `cancelled`,
download a checkpoint, then compare its curves with a GRPO job's that ran meanwhile (the
jobs and pool views show it queued first). Any browser console error or page error fails
it; on each view every text must have WCAG AA contrast and every control a name and a
place in the tab order. Screenshots go to `test-artifacts/` (gitignored); with
LCO_DOCS_SCREENSHOT=1 the job view is also written to docs/dashboard-job.png.

    LCO_HOME=.cache/lco .venv/bin/pytest tests/test_dashboard_browser.py
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs.migrate import upgrade
from lco_core.tasks import get_task
from tests.service_fixtures import ROOT, LiveService, fast_settings, free_port, new_key

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
        message = f"{CHROMIUM} is missing (scripts/install.sh installs Debian's chromium)"
        if os.environ.get("LCO_REQUIRE_BROWSER") == "1":  # set by scripts/test.sh
            pytest.fail(message)
        pytest.skip(message)
    return CHROMIUM


@pytest.fixture
def served(tmp_path: Path, tiny_model_path: Path) -> Iterator[tuple[LiveService, str]]:
    settings = fast_settings(tmp_path / "data")
    upgrade(settings)
    key = new_key(settings, "dash")
    port = free_port()
    service = LiveService(f"http://127.0.0.1:{port}/v1", settings)
    service.start(
        [sys.executable, "-m", "cli.main", "serve", "--port", str(port)], tmp_path / "serve.log"
    )
    try:
        service.wait_healthy()
        yield service, key
    finally:
        service.stop()


def _submit(service: LiveService, key: str, algorithm: str, max_steps: int) -> dict[str, Any]:
    task = get_task("addition")  # lco-tiny gets some right: the reward curve moves
    data = "".join(json.dumps(item) + "\n" for item in task.examples(64, seed=1)).encode()
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=service.base_url, headers=headers, timeout=30) as client:
        upload = client.post(
            "/files", files={"file": ("addition.jsonl", data)}, data={"purpose": "fine-tune"}
        )
        assert upload.status_code == 200, upload.text
        body = {
            "model": "lco-tiny",
            "training_file": upload.json()["id"],
            "suffix": algorithm,
            "method": {
                "type": "reinforcement",
                "reinforcement": {
                    "grader": task.grader(),
                    "hyperparameters": {**RL_HP, "algorithm": algorithm, "max_steps": max_steps},
                },
            },
        }
        job = client.post("/fine_tuning/jobs", json=body)
        assert job.status_code == 200, job.text
        return dict(job.json())


def _docs_png(png: bytes, path: Path) -> None:
    """The README's screenshot, reduced to 128 colours (a third of the bytes, same look)."""
    import io

    from PIL import Image

    Image.open(io.BytesIO(png)).convert("RGB").quantize(128).save(path, optimize=True)


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


def _accessible(page: Any, view: str) -> None:
    failures = page.evaluate(CONTRAST_JS)
    assert not failures, f"{view}: text below WCAG AA contrast: {failures}"
    unusable = page.evaluate(CONTROLS_JS)
    assert not unusable, f"{view}: controls without a name or out of the tab order: {unusable}"


def test_dashboard_follows_a_live_job_and_cancels_it(served: tuple[LiveService, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    executable = _browser_or_skip()
    service, key = served
    job = _submit(service, key, "lco", 2000)
    # Queued behind the first (one worker), it runs while that one is paused.
    other = _submit(service, key, "grpo", 3)
    origin = service.base_url.removesuffix("/v1")
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []

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
            expect(page.get_by_role("button", name="Pause")).to_be_enabled()
            _accessible(page, "job")
            page.screenshot(path=str(ARTIFACTS / "dashboard-job.png"))
            if os.environ.get("LCO_DOCS_SCREENSHOT"):
                # The README's picture: let the curves grow a little longer first.
                page.wait_for_function(
                    "() => +document.querySelector('figure[data-chart=reward]').dataset.points >= 15",
                    timeout=STEP_TIMEOUT_MS,
                )
                _docs_png(page.screenshot(full_page=True), ROOT / "docs" / "dashboard-job.png")

            # Pause (the GRPO job takes the worker meanwhile), resume: the curves go on.
            page.get_by_role("button", name="Pause").click()
            expect(status).to_have_text("paused", timeout=STEP_TIMEOUT_MS)
            paused_at = int(reward.get_attribute("data-points") or 0)
            page.get_by_role("button", name="Resume").click()
            expect(status).to_have_text("running", timeout=RUNNING_TIMEOUT_MS)
            page.wait_for_function(
                "n => +document.querySelector('figure[data-chart=reward]').dataset.points > n",
                arg=paused_at,
                timeout=STEP_TIMEOUT_MS,
            )

            page.get_by_role("button", name="Cancel").click()
            expect(status).to_have_text("cancelled", timeout=STEP_TIMEOUT_MS)
            expect(page.get_by_role("button", name="Cancel")).to_be_disabled()
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
        finally:
            browser.close()

    with httpx.Client(
        base_url=service.base_url, headers={"Authorization": f"Bearer {key}"}
    ) as client:
        assert client.get(f"/fine_tuning/jobs/{job['id']}").json()["status"] == "cancelled"
    assert not problems, "\n".join(problems) + "\n" + service.dump_logs()
