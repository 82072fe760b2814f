"""The line between a data-parallel run's driver and its first worker: a small Ray actor both hold.

The worker of rank 0 sends what the single-process trainer hands its caller (progress after a step, each
evaluation, the history it resumed with, the final result) and asks after each evaluation whether to go on: the
driver calls the run's callback (an early-stopping scheduler's report) and answers. The driver asks the workers
to stop (a signal caught, a callback that failed) with `request_stop`, which rank 0 polls without waiting.
The actor holds no CPU and lives as long as the driver that made it.
"""

from __future__ import annotations

import asyncio
from typing import Any


class RunLink:
    """Events from rank 0 to the driver, the driver's answers to evaluations, and its stop request."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.arrived = asyncio.Event()
        self.answers: dict[int, asyncio.Future] = {}
        self.evaluations = 0
        self.stop: str | None = None

    async def send(self, kind: str, data: Any) -> None:
        """An event the worker does not wait on: `progress`, `started` (the restored history), `final`."""
        self.events.append((kind, data))
        self.arrived.set()

    async def evaluated(self, metrics: dict[str, Any]) -> str:
        """An evaluation; returns once the driver has answered: `go` on, `stop` here (the callback said so) or
        `interrupt` (the driver asked the workers to stop)."""
        if self.stop is not None:
            return "interrupt"
        number, self.evaluations = self.evaluations, self.evaluations + 1
        answer = asyncio.get_running_loop().create_future()
        self.answers[number] = answer
        self.events.append(("evaluation", {"number": number, "metrics": metrics}))
        self.arrived.set()
        return await answer

    async def answer(self, number: int, verdict: str) -> None:
        future = self.answers.pop(number, None)
        if future is not None and not future.done():
            future.set_result(verdict)

    async def take(self, timeout: float) -> list[tuple[str, Any]]:
        """The events since the last call (waiting up to `timeout` seconds for one)."""
        if not self.events:
            try:
                await asyncio.wait_for(self.arrived.wait(), timeout)
            except asyncio.TimeoutError:
                pass
        events, self.events = self.events, []
        self.arrived.clear()
        return events

    async def request_stop(self, reason: str) -> None:
        """Ask the workers to stop after their current step; unanswered evaluations are answered `interrupt`."""
        self.stop = self.stop or reason
        for number in list(self.answers):
            await self.answer(number, "interrupt")

    async def stop_requested(self) -> str | None:
        return self.stop


def make_link() -> Any:
    """A RunLink actor owned by this process (it ends with it)."""
    import ray

    return ray.remote(num_cpus=0)(RunLink).remote()
