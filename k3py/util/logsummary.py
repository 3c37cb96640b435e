"""A logger front that writes each distinct failure once, then counts its repeats.

A hostile or broken client can trigger the same failure thousands of times a second (a
malformed request, a refused connection); one log line — let alone one traceback — per
occurrence lets it fill the disk and bury everything else. ``LogSummary.log(key, ...)`` writes
the first occurrence of ``key`` in full; repeats within the window are only counted, and the
count is written as one line ("N more like this in the last 60 s: ...") when the window is
over — at the key's next occurrence, or at a ``flush()``: every ``log`` call flushes once a
window, and a periodic task may call it too.

Keys are chosen by the caller from what it controls (an exception type and code location, a
kind of event), never from client-supplied text, and at most ``max_keys`` are remembered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_MAX_KEYS = 1024


@dataclass
class _Window:
    started: float
    level: int
    text: str  # the first occurrence's message, for the summary line
    repeats: int = 0


class LogSummary:
    """Writes the first occurrence of each key; counts the rest per window."""

    def __init__(
        self,
        logger: logging.Logger,
        window: float = DEFAULT_WINDOW_SECONDS,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.window = window
        self.max_keys = max_keys
        self.clock = clock
        self._windows: dict[Hashable, _Window] = {}
        self._flushed = clock()

    def log(self, key: Hashable, level: int, msg: str, *args: Any, exc_info: Any = None) -> bool:
        """Log ``msg % args`` if ``key`` was not seen in the current window; True if written."""
        now = self.clock()
        if now - self._flushed >= self.window:
            self.flush()
        window = self._windows.get(key)
        if window is not None and now - window.started < self.window:
            window.repeats += 1
            return False
        if window is not None:
            self._summarise(window)
            del self._windows[key]
        elif len(self._windows) >= self.max_keys:
            oldest = next(iter(self._windows))
            self._summarise(self._windows.pop(oldest))
        text = msg % args if args else msg
        self._windows[key] = _Window(now, level, text)
        self.logger.log(level, "%s", text, exc_info=exc_info)
        return True

    def flush(self) -> None:
        """Write the counts of windows that are over (call periodically)."""
        now = self._flushed = self.clock()
        for key in [k for k, w in self._windows.items() if now - w.started >= self.window]:
            self._summarise(self._windows.pop(key))

    def _summarise(self, window: _Window) -> None:
        if window.repeats:
            self.logger.log(
                window.level, "%d more like this in the last %.0f s: %s", window.repeats, self.window, window.text
            )
