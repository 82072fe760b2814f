"""Stopping a run cleanly on SIGINT or SIGTERM.

Inside `stop_on_signals()` (the CLI wraps a training run in it), the first SIGINT or SIGTERM is only recorded:
the trainer finishes the step it is in, saves a checkpoint and returns with status "interrupted", and the CLI
exits 128 + the signal's number (130, 143). A second signal stops at once (KeyboardInterrupt for SIGINT, exit
status 143 for SIGTERM); checkpoints are written atomically, so the last one stays whole.

Handlers can only be installed from the main thread; elsewhere the block runs with the handlers it has. The
previous handlers are restored when the block ends.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_received: list[int] = []      # signals received inside `stop_on_signals`, first one first


def interrupt_signal() -> int | None:
    """The signal asking the current run to stop, or None."""
    return _received[0] if _received else None


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


@contextmanager
def stop_on_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """Within the block, the first of `signals` asks the trainer to stop at the end of its step (see the module
    docstring)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in signals}

    def handler(signum: int, frame: FrameType | None) -> None:
        if _received:           # a second signal: stop now
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise SystemExit(128 + signum)
        _received.append(signum)
        sys.stderr.write(f"\n{signal_name(signum)}: finishing this step and saving a checkpoint (send it again to "
                         "quit at once)\n")
        sys.stderr.flush()

    _received.clear()
    try:
        for s in signals:
            signal.signal(s, handler)
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        _received.clear()
