"""Ctrl-C (SIGINT) and SIGTERM during a search.

While the trials run, the first signal is only noted: Tune sees it through `tune_stopper` (a Tune `Stopper`
whose `stop_all` turns true), stops the running trials without telling the study anything about them (they
stay RUNNING, so a resume asks them again with the same parameters) and returns. The search then writes what
finished, marked partial, and raises `SearchInterrupted`; the CLI exits 130 (SIGINT) or 143 (SIGTERM) and
names `--resume`. A second signal acts at once, as it would without us (KeyboardInterrupt, or Ray's SIGTERM
exit). Tune's own SIGINT handler is turned off (TUNE_DISABLE_SIGINT_HANDLER): it would end the run as if it
had finished.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator
from typing import Any

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class SearchInterrupted(KeyboardInterrupt):
    """A search stopped by a signal; `result` holds what finished (its summary says `interrupted`)."""

    def __init__(self, result: Any, signum: int):
        super().__init__(f"search interrupted by {signal.Signals(signum).name}")
        self.result = result
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class Interruption:
    """Notes the first SIGINT/SIGTERM while installed (`with interruption.catch():`)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        return {"signum": self.signum, "previous": {}}     # Tune pickles its run config; handlers are no state

    @property
    def name(self) -> str | None:
        return signal.Signals(self.signum).name if self.signum else None

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is None:
            self.signum = signum
            sys.stderr.write(f"\n{signal.Signals(signum).name}: stopping the running trials and writing what "
                             "finished (send it again to quit at once)\n")
            sys.stderr.flush()
        for sig, handler in self.previous.items():      # the next signal acts as it would without us
            signal.signal(sig, handler)

    @contextlib.contextmanager
    def catch(self) -> Iterator[Interruption]:
        if threading.current_thread() is not threading.main_thread():
            yield self                                    # signals reach the main thread only
            return
        tune_handler = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        self.previous = {sig: signal.getsignal(sig) for sig in SIGNALS}
        for sig in SIGNALS:
            signal.signal(sig, self.handle)
        try:
            yield self
        finally:
            for sig, handler in self.previous.items():
                signal.signal(sig, handler)
            if tune_handler is None:
                os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
            else:
                os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = tune_handler


def tune_stopper(interruption: Interruption) -> Any:
    """A Tune `Stopper` that ends the whole run once `interruption` has caught a signal (ray.tune is imported
    here, on use, as everywhere else in the search)."""
    from ray.tune.stopper import Stopper

    class StopOnSignal(Stopper):
        def __call__(self, trial_id: str, result: dict[str, Any]) -> bool:
            return False

        def stop_all(self) -> bool:
            return interruption.signum is not None

    return StopOnSignal()
