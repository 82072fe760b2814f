"""Stopping cleanly on SIGINT or SIGTERM: one design for `composer train` and `composer search`.

While an `Interruption` is caught (`with interruption.catch():`), the first SIGINT or SIGTERM is only noted
(`signum`), with a line on stderr saying what happens next, and the run stops at its next safe point: the
trainer finishes the step it is in, saves a checkpoint and returns with status "interrupted" (it polls
`interrupt_signal()`); a search stops its trials (Tune sees the signal through a stopper), writes what finished
marked partial and raises SearchInterrupted. The command then exits 128 + the signal's number (130, 143). A
second signal forces: KeyboardInterrupt for SIGINT, exit status 143 for SIGTERM; every file is written
atomically, so the last checkpoint and results stay whole.

Handlers can only be installed from the main thread; elsewhere the block runs with the handlers it has. The
previous handlers are restored when the block ends. While caught, Ray Tune is told to leave SIGINT to us
(TUNE_DISABLE_SIGINT_HANDLER): its own handler would end a run as if it had finished.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
TUNE_SIGINT = "TUNE_DISABLE_SIGINT_HANDLER"

_caught: list[Interruption] = []      # the interruptions being caught, innermost last


class Interruption:
    """Notes the first SIGINT/SIGTERM while caught; the second one forces. `stopping` says what the run does
    after the first (printed with the signal's name)."""

    def __init__(self, stopping: str = "finishing this step and saving a checkpoint"):
        self.stopping = stopping
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "previous": {}}        # Tune pickles its run config; handlers are no state

    @property
    def name(self) -> str | None:
        return signal_name(self.signum) if self.signum else None

    def handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is not None:         # the second signal: stop now
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        self.signum = signum
        sys.stderr.write(f"\n{signal_name(signum)}: {self.stopping} (send it again to quit at once)\n")
        sys.stderr.flush()

    @contextmanager
    def catch(self, signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[Interruption]:
        if threading.current_thread() is not threading.main_thread():
            yield self                                    # signals reach the main thread only
            return
        tune = os.environ.get(TUNE_SIGINT)
        os.environ[TUNE_SIGINT] = "1"
        self.previous = {s: signal.getsignal(s) for s in signals}
        _caught.append(self)
        try:
            for s in signals:
                signal.signal(s, self.handle)
            yield self
        finally:
            for s, handler in self.previous.items():
                signal.signal(s, handler)
            _caught.remove(self)
            if tune is None:
                os.environ.pop(TUNE_SIGINT, None)
            else:
                os.environ[TUNE_SIGINT] = tune


def stop_on_signals() -> Any:
    """`with stop_on_signals():` catches a fresh Interruption (what `composer train` wraps a run in)."""
    return Interruption().catch()


def interrupt_signal() -> int | None:
    """The signal asking the current run to stop (the innermost caught Interruption's), or None."""
    return _caught[-1].signum if _caught else None


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name
