"""The embedded Ray cluster goes down with its driver, even after kill -9.

Ray ties its GCS server and raylet to the driver (the kernel kills them when the driver dies), but the raylet's
children (dashboard and runtime-env agents, idle workers) notice only after tens of seconds, and the session
folder (`/tmp/ray/session_*`: logs, sockets) stays forever. This watchdog is a small separate process that the
driver starts once, before its first embedded cluster (composer/ray_cluster.py), with the read end of a
pipe on its stdin; the driver holds the only write end, so the pipe ends exactly when the driver does, however
it dies. While the driver lives, the watchdog keeps a record of the driver's Ray processes (children of the
driver whose command line is in Ray's package, and everything below them) with their start times, and of their
session folders (`--session-dir=` in their command lines). When the pipe ends it SIGKILLs what is left of them
and of the processes Ray marked as the raylet's (`RAY_RAYLET_PID` in their environment), then removes the
session folders (`drop`; `keep` leaves them for Ray's logs). Each session folder is marked with a
`composer_driver` file naming the driver, so a later watchdog removes the folders of Composer drivers that died
before theirs could.

Run as a script (no imports from Composer, so it starts in a fraction of a second):

    python ray_watchdog.py DRIVER_PID RAY_PACKAGE_DIR drop|keep

Linux only (/proc); elsewhere it only waits.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import signal
import sys
import time
from pathlib import Path

MARKER = "composer_driver"
POLL_S = 0.5
STALE_AFTER_S = 60
SESSION_ARG = re.compile(r"--session[-_]dir=(\S+)")


def proc_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, start time in clock ticks, command line) of every process we can read."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        out[int(entry.name)] = (int(fields[1]), int(fields[19]), cmdline)
    return out


def update(tracked: dict[int, int], sessions: set[Path], driver: int, ray_dir: str) -> None:
    """Add the driver's Ray processes and their descendants to `tracked` (pid -> start time), and their
    session folders to `sessions` (each new one marked, and its stale neighbours removed)."""
    table = proc_table()
    me = os.getpid()
    roots = [pid for pid, (ppid, _, cmd) in table.items() if ppid == driver and ray_dir in cmd and pid != me]
    for pid in roots:
        for found in SESSION_ARG.findall(table[pid][2]):
            session = Path(found)
            if session not in sessions and session.is_dir():
                sessions.add(session)
                try:
                    (session / MARKER).write_text(f"{driver}\n")
                except OSError:
                    pass
                prune_stale_sessions(session)
    frontier = roots + [pid for pid, start in tracked.items() if table.get(pid, (0, None))[1] == start]
    for pid in roots:
        tracked[pid] = table[pid][1]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start, _) in table.items():
            if ppid == parent and pid not in tracked:
                tracked[pid] = start
                frontier.append(pid)


def raylet_children(raylets: set[int]) -> dict[int, int]:
    """Processes whose environment names one of `raylets` as their raylet (workers and agents), even after
    they were re-parented."""
    out = {}
    wanted = {f"RAY_RAYLET_PID={pid}".encode() for pid in raylets}
    for pid, (_, start, _) in proc_table().items():
        try:
            env = set(Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"))
        except OSError:
            continue
        if env & wanted:
            out[pid] = start
    return out


def kill(tracked: dict[int, int]) -> int:
    """SIGKILL every tracked process that is still the same process (same start time); how many."""
    table = proc_table()
    killed = 0
    for pid, start in tracked.items():
        if pid != os.getpid() and table.get(pid, (0, None))[1] == start:
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune_stale_sessions(session: Path) -> None:
    """Remove the session folders beside `session` left by Composer drivers that are gone (their marker names
    a dead pid and no running process names the folder)."""
    folders = [p for p in session.parent.glob("session_*") if p.is_dir() and not p.is_symlink() and p != session]
    stale = []
    for folder in folders:
        try:
            pid = int((folder / MARKER).read_text().split()[0])
            young = time.time() - folder.stat().st_mtime < STALE_AFTER_S
        except (OSError, ValueError, IndexError):
            continue
        if not alive(pid) and not young:
            stale.append(folder)
    if not stale:
        return
    commands = [cmd for _, _, cmd in proc_table().values()]
    for folder in stale:
        if not any(str(folder) in cmd for cmd in commands):
            shutil.rmtree(folder, ignore_errors=True)


def drop_session(session: Path) -> None:
    latest = session.parent / "session_latest"
    if latest.is_symlink() and Path(os.readlink(latest)).name == session.name:
        latest.unlink(missing_ok=True)
    shutil.rmtree(session, ignore_errors=True)


def main(driver: int, ray_dir: str, drop: bool) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)      # a terminal's Ctrl-C is the driver's to handle
    tracked: dict[int, int] = {}
    sessions: set[Path] = set()
    linux = Path("/proc/self/stat").exists()
    while alive(driver):
        ready, _, _ = select.select([0], [], [], POLL_S)
        if ready and not os.read(0, 4096):
            break                                     # the driver is gone (or closed the pipe at exit)
        if linux:
            update(tracked, sessions, driver, ray_dir)
    if linux:
        kill(tracked)
        for _ in range(4):                            # workers a raylet started just before the end
            time.sleep(0.25)
            if not kill(raylet_children(set(tracked))):
                break
    if drop:
        time.sleep(0.5)
        for session in sessions:
            drop_session(session)


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2], sys.argv[3] == "drop")
