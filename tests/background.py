"""A command a test runs in the background while it acts (Ctrl-C, a cancel from another
process), with stdout and stderr in files rather than pipes.

Why files: waiting on pipes means waiting for EOF, which never comes while any other process
holds a write end (one forked meanwhile by another thread of the test process); waiting on
the process itself has no such dependence. If the command does not end in time, it gets
SIGABRT and Python's faulthandler (enabled here) writes its stack into the stderr file, which
the failure then shows.

The command starts with SIGINT at its default, whatever this process inherited: a test
suite started as a background job (`cmd &` in a script) has SIGINT ignored, a child would
inherit that, and a test of Ctrl-C would then wait forever.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


@contextlib.contextmanager
def _sigint_default() -> Iterator[None]:
    """If SIGINT is ignored here, handle it (Python's usual handler) for the moment, so that
    a child started inside gets the default action: exec resets a handled signal to its
    default but keeps an ignored one ignored."""
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:
        yield
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass
class Background:
    proc: subprocess.Popen[str]
    out: Path
    err: Path

    @classmethod
    def start(cls, argv: list[str], *, env: dict[str, str], cwd: Path, logs: Path) -> Background:
        """Start `argv`; its output goes to `logs`/out and `logs`/err."""
        logs.mkdir(parents=True, exist_ok=True)
        out, err = logs / "out", logs / "err"
        with out.open("w") as out_file, err.open("w") as err_file, _sigint_default():
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env={**env, "PYTHONFAULTHANDLER": "1"},
                stdout=out_file,
                stderr=err_file,
                text=True,
            )
        return cls(proc, out, err)

    @property
    def stdout(self) -> str:
        return self.out.read_text()

    @property
    def stderr(self) -> str:
        return self.err.read_text()

    def first_line(self, timeout: float = 60.0) -> str:
        """The first line the command writes to stdout, once it has written it whole."""
        deadline = time.monotonic() + timeout
        while "\n" not in (text := self.stdout):
            assert self.proc.poll() is None, f"exited {self.proc.returncode}:\n{self.stderr}"
            assert time.monotonic() < deadline, f"no line in {timeout:g} s:\n{self.stderr}"
            time.sleep(0.05)
        return text.split("\n", 1)[0]

    def wait(self, timeout: float = 60.0) -> int:
        """Its exit status, once it ends; AssertionError with its stack if it does not end
        within `timeout` seconds (a bound on a hang, not a timing check)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)
            self.proc.wait(timeout=10)
            raise AssertionError(f"still running after {timeout:g} s:\n{self.stderr}") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
