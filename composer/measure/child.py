"""One measurement in its own process, so that no measurement disturbs the next: a fresh interpreter has its own
allocator, its own peak memory (`ru_maxrss` only grows within a process), its own thread pool and kernel caches.

    measure_in_child(spec, context, settings) -> the measurement (composer/measure/protocol.py)

The parent runs `python -m composer.measure.child` with the job (the spec as data, the context, the settings) as
JSON on stdin; the child writes one JSON object to stdout, its result or `{"error": ...}`, and anything else it
prints goes to stderr. A child that runs past `settings.timeout_s` is killed, one that dies (out of memory: killed
by a signal) or fails is a MeasureError with the reason. Nothing is written to disk.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from typing import Any

from composer.errors import UserError
from composer.measure.protocol import MeasureSettings


class MeasureError(UserError):
    """A measurement that did not finish: timed out, failed, or its process was killed."""


def measure_in_child(spec: Any, context: int, settings: MeasureSettings) -> dict[str, Any]:
    """Run `measure_context(spec, context, settings)` in a fresh Python process (see the module docstring)."""
    import dataclasses

    job = json.dumps({"spec": spec.to_dict(), "context": context, "settings": dataclasses.asdict(settings)})
    env = {**os.environ, "OMP_NUM_THREADS": str(settings.threads), "MKL_NUM_THREADS": str(settings.threads)}
    try:
        done = subprocess.run([sys.executable, "-m", "composer.measure.child"], input=job, capture_output=True,
                              text=True, timeout=settings.timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise MeasureError(f"measuring context {context:,} took longer than timeout_s {settings.timeout_s:g} s "
                           "(the measuring process was stopped)") from None
    reply = _last_json(done.stdout)
    if reply is not None and "error" in reply:
        raise MeasureError(f"measuring context {context:,} failed: {reply['error']}")
    if done.returncode != 0 or reply is None:
        raise MeasureError(f"measuring context {context:,} failed: {_death(done.returncode, done.stderr)}")
    return reply


def _last_json(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(data, dict):
            return data
    return None


def _death(returncode: int, stderr: str) -> str:
    if returncode < 0:
        name = signal.Signals(-returncode).name if -returncode in signal.valid_signals() else str(-returncode)
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        return f"the measuring process was killed by {name}{hint}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[-1][:300] if lines else f"the measuring process exited with code {returncode}"


def main() -> int:
    """The child: read the job from stdin, measure, write the result (or the error) to stdout as one line."""
    out = sys.stdout
    sys.stdout = sys.stderr             # whatever the measured code prints stays off the reply
    try:
        job = json.loads(sys.stdin.read())
        from composer.measure.protocol import measure_context
        from composer.spec_parse import load_spec

        result = measure_context(load_spec(job["spec"]), int(job["context"]), MeasureSettings(**job["settings"]))
    except Exception as e:      # the parent turns it into one MeasureError line
        out.write(json.dumps({"error": f"{type(e).__name__}: {e}"}) + "\n")
        out.flush()
        return 1
    out.write(json.dumps(result) + "\n")
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
