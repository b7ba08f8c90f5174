"""Caps on open Server-Sent Event streams: per API key and in total.

    slots = StreamSlots(per_key=8, total=256)
    slot = slots.acquire(key_id)        # QuotaExceeded (429 too_many_streams) when full
    try: ...stream...
    finally: slot.release()             # idempotent: safe to call from several places

Every open stream polls the database each second, so a few hundred from one team slowed
every other team's requests (GET median 0.02 s -> 3.4 s). The counts live in this API
process, with no shared store: with N API processes (or uvicorn workers) a key may hold up
to N times `per_key` streams, and the service N times `total`.
"""

from __future__ import annotations

import threading
from collections import Counter

from jobs.errors import QuotaExceeded

# A stream lasts up to 30 minutes, but clients close theirs often (tab closed, job done):
# a short Retry-After lets a polite client try again soon without hammering.
RETRY_AFTER_S = 10


class StreamSlot:
    """One open stream's place; `release` frees it once, however often it is called."""

    def __init__(self, slots: StreamSlots, key_id: str):
        self._slots = slots
        self._key_id = key_id
        self._released = False

    def release(self) -> None:
        with self._slots.lock:
            if self._released:
                return
            self._released = True
            self._slots.release_locked(self._key_id)


class StreamSlots:
    """Open streams counted per key id and in total, for this process. Acquired in a route's
    worker thread and released on the event loop, hence the lock."""

    def __init__(self, *, per_key: int, total: int):
        self.per_key = per_key
        self.total = total
        self.lock = threading.Lock()
        self.by_key: Counter[str] = Counter()
        self.open = 0

    def acquire(self, key_id: str) -> StreamSlot:
        """A slot for a new stream of `key_id`, or QuotaExceeded (429) naming the cap hit."""
        with self.lock:
            if self.by_key[key_id] >= self.per_key:
                raise QuotaExceeded(
                    f"Too many open streams for this API key ({self.by_key[key_id]} open, "
                    f"limit {self.per_key}); close one or retry later.",
                    code="too_many_streams",
                    retry_after_s=RETRY_AFTER_S,
                )
            if self.open >= self.total:
                raise QuotaExceeded(
                    f"Too many open streams on this server ({self.open} open, limit "
                    f"{self.total}); retry later.",
                    code="too_many_streams",
                    retry_after_s=RETRY_AFTER_S,
                )
            self.by_key[key_id] += 1
            self.open += 1
        return StreamSlot(self, key_id)

    def release_locked(self, key_id: str) -> None:
        """Give back one of `key_id`'s slots; the caller holds `lock`."""
        self.by_key[key_id] -= 1
        if self.by_key[key_id] <= 0:
            del self.by_key[key_id]  # no entry per key that ever streamed
        self.open -= 1
