"""The run directory of one search, `runs/<name>/`, written by `composer search` and read by report, export
and scaling. Layout:

    space.yaml          the resolved search space (the YAML the search ran with, with CLI overrides)
    run.json            written once at creation: the space's fingerprint (checked by --resume), provenance
    study.db            the Optuna study (SQLite): `optuna-dashboard sqlite:///runs/<name>/study.db`
    tune/               the Ray Tune experiment directory (trial logs, experiment state)
    leaderboard.csv     one row per trial: LEADERBOARD_COLUMNS, then the objective metrics and the measured costs
                        (`metric@context`)
    trials/<n>/         per trial (n = Optuna trial number): spec.yaml, result.json, metrics.jsonl (the learning
                        curve, one evaluation per line), the trainer's checkpoint
    cache/<key>.json    finished results by (arch_id, training settings): a duplicate candidate reuses them
    measure/<key>.json  measured inference costs by arch_id, device, threads and context (composer/measure/cache.py)
    best.yaml           the best architecture (valid spec: `composer.load_spec` reads it)
    consensus.yaml      the consensus of the top candidates (valid spec; `aggregate:`), trained as a trial flagged
                        `consensus` in the leaderboard and the study
    incremental.json    an incremental search's finished stages: their trials and frozen slots (for --resume)
    pareto.json         the Pareto set, for a multi-objective search
    summary.json        counts, best row, consensus arch_id, strategy, wall time; `interrupted` when partial
    .lock               held by the one driver working in the folder (see RunLock)

Every file is written atomically (composer/atomic.py: a temporary file, then `os.replace`), so a killed
search leaves no half-written file. Names that become folders go through `safe_name`, and the folder through
`contained`, so nothing is written outside the root the user named.
"""

from __future__ import annotations

import csv
import datetime
import fcntl
import hashlib
import io
import json
import os
import re
import socket
import sys
from pathlib import Path
from typing import Any

from composer.atomic import write_atomic, write_json
from composer.errors import UserError

LEADERBOARD_COLUMNS = ("trial", "status", "reason", "arch_id", "stripe", "params", "active_params",
                       "flops_per_token", "state_bytes", "val_loss", "accuracy", "step", "tokens", "evaluations",
                       "budget_fraction", "tokens_per_s", "train_time_s", "lr", "seed", "reused", "consensus",
                       "params_json")
# what a search writes at the top of its folder, and its subfolders: nothing else may write over them
RUN_FILES = ("space.yaml", "run.json", "study.db", "leaderboard.csv", "best.yaml", "consensus.yaml", "pareto.json",
             "summary.json", ".lock", "ladder.json", "fits.png", "incremental.json")
RUN_FOLDERS = ("trials", "tune", "cache", "report", "confirm", "measure")
LOCK_FILE = ".lock"
MEASURED_KEY = re.compile(r"[a-z_]+@\d+")     # a measured cost, `decode_ms_per_token@8192` (composer/measure)
NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,99}")
# space.yaml keys that may change between sessions of one search (how many trials, on what resources)
UNFINGERPRINTED = ("trials", "resources", "description")


# -- names and places ---------------------------------------------------------------------------------
def safe_name(value: Any, field: str) -> str:
    """`value` if it can be one folder name (letters, digits, `.`, `_`, `-`; not starting with `.` or `-`;
    at most 100 characters), else a UserError naming `field`. So `..`, `a/b` and `/abs` are refused."""
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise UserError(f"expected a name of letters, digits, '.', '_' or '-' (not starting with '.' or '-', at "
                        f"most 100 characters), got {value!r}", path=field)
    return value


def contained(root: str | os.PathLike, path: str | os.PathLike, field: str | None = None) -> Path:
    """`path` resolved (symbolic links followed), if it lies inside `root` resolved; else a UserError."""
    base, resolved = Path(root).resolve(), Path(path).resolve()
    if resolved != base and base not in resolved.parents:
        raise UserError(f"{path} resolves to {resolved}, outside {base}", path=field)
    return resolved


def run_folder_of(path: str | os.PathLike) -> Path | None:
    """The run folder (search or ladder) that `path` would write into, when it is one of the run's own files or
    inside one of its subfolders; None for any other place."""
    resolved = Path(path).resolve()
    for folder in (resolved.parent, *resolved.parent.parents):
        if is_run_folder(folder):
            inside = resolved.relative_to(folder).parts
            if inside[0] in RUN_FILES or (len(inside) > 1 and inside[0] in RUN_FOLDERS):
                return folder
            return None
    return None


def is_run_folder(folder: Path) -> bool:
    """A search's folder (space.yaml with its study or run.json), a ladder's (ladder.json), or one in use."""
    search = (folder / "space.yaml").is_file() and ((folder / "study.db").exists() or (folder / "run.json").exists())
    return search or (folder / "ladder.json").is_file() or (folder / LOCK_FILE).exists()


def check_not_run_file(path: str | os.PathLike, field: str) -> None:
    """Refuse to write `path` when it is a run's own file (or inside a run's subfolder) or a folder."""
    if Path(path).is_dir():
        raise UserError(f"{path} is a folder; give a file name", path=field)
    folder = run_folder_of(path)
    if folder is not None:
        raise UserError(f"{path} belongs to the run in {folder}; write somewhere else", path=field)


# -- one driver per folder -----------------------------------------------------------------------------
class RunLock:
    """An exclusive `flock` on `<folder>/.lock`, held by the one process working in the folder (a search, a
    ladder, a confirmation). The kernel drops the lock when its holder dies (kill -9 included), so a lock left
    by a dead process is stale by construction: the next driver takes it (and `stale` tells whose it was). The
    file names the holder (pid, host, start time, command) for the second driver's error message.

    `with RunLock(folder):` creates the folder when needed and, on exit, removes the lock file, and the folders
    it created when nothing else was written there."""

    def __init__(self, folder: str | os.PathLike, field: str | None = None):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self.field = field
        self.fd: int | None = None
        self.created: list[Path] = []        # the folders this lock made, deepest first
        self.stale: dict[str, Any] | None = None

    def acquire(self) -> RunLock:
        if self.folder.exists() and not self.folder.is_dir():
            raise UserError(f"{self.folder} is a file, not a folder", path=self.field)
        self.created = [p for p in (self.folder, *self.folder.parents) if not p.exists()]
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {self.folder}: {e.strerror or e}", path=self.field) from None
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise UserError(f"{self.folder} is in use by {describe_owner(read_owner(self.path))}; wait for it "
                                "to finish or stop it (one process at a time works in a run folder)") from None
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:        # else the holder removed the file between our open and our lock: take the new one
                break
            os.close(fd)
        self.fd = fd
        self.stale = read_owner(self.path) or None       # a dead holder's record: it never released the lock
        owner = {"pid": os.getpid(), "host": socket.gethostname(),
                 "since": datetime.datetime.now().isoformat(timespec="seconds"), "command": " ".join(sys.argv)[:300]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(owner).encode(), 0)
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None
        for folder in self.created:
            if any(folder.iterdir()):
                break
            folder.rmdir()

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


def read_owner(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def describe_owner(owner: dict[str, Any]) -> str:
    if not owner:
        return "another process"
    return (f"pid {owner.get('pid')} on host {owner.get('host')} since {owner.get('since')}"
            + (f" ({owner['command']})" if owner.get("command") else ""))


# -- reading, with one error naming the file ------------------------------------------------------------
def read_json(path: Path, default: Any) -> Any:
    """A run file's JSON (`default` when the file is absent); a UserError naming the file when unreadable."""
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines file (metrics.jsonl); a UserError naming the file and line when it is not."""
    path = Path(path)
    out = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise UserError(f"{path}:{number}: not a JSON record ({e})") from None
        if not isinstance(record, dict):
            raise UserError(f"{path}:{number}: expected a JSON object, got {type(record).__name__}")
        out.append(record)
    return out


def space_fingerprint(data: dict[str, Any]) -> str:
    """A hash of what defines a search's trials: the space's data without `UNFINGERPRINTED` keys (trials,
    resources, description may change between sessions)."""
    kept = {k: v for k, v in data.items() if k not in UNFINGERPRINTED}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:20]


class RunDir:
    """Paths and readers/writers of one `runs/<name>/` folder."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    @property
    def name(self) -> str:
        return self.root.name

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def study_url(self) -> str:
        return f"sqlite:///{self.path('study.db')}"

    def trial_dir(self, number: int) -> Path:
        return self.path("trials", str(number))

    def exists(self) -> bool:
        return self.path("space.yaml").is_file()

    def lock(self, field: str | None = None) -> RunLock:
        return RunLock(self.root, field)

    def check_new(self) -> None:
        """A new search needs an empty (or absent) folder: an existing search is never overwritten silently."""
        if self.exists():
            raise UserError(f"{self.root} already holds a search; use --resume {self.root} to continue it, "
                            "or --name to start a new one")
        if self.root.is_dir():
            others = sorted(p.name for p in self.root.iterdir() if p.name != LOCK_FILE)
            if others:
                raise UserError(f"{self.root} is not empty ({', '.join(others[:5])}); a new search needs a new "
                                "folder (--name)")

    def create(self, space_yaml: str, provenance: dict[str, Any] | None = None) -> None:
        """Write space.yaml and run.json (the space's fingerprint, for --resume to check) into a new folder."""
        import yaml

        self.check_new()
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.path("run.json"), {"space_fingerprint": space_fingerprint(yaml.safe_load(space_yaml)),
                                           "created": datetime.datetime.now().isoformat(timespec="seconds"),
                                           "provenance": provenance or {}})
        write_atomic(self.path("space.yaml"), space_yaml)

    def read_run_info(self) -> dict[str, Any]:
        """run.json ({} for a folder made before it existed); a UserError naming the file when unreadable."""
        path = self.path("run.json")
        data = read_json(path, default={})
        if not isinstance(data, dict):
            raise UserError(f"{path}: expected a JSON object")
        return data

    # -- leaderboard ----------------------------------------------------------------------------
    def write_leaderboard(self, rows: list[dict[str, Any]], metrics: list[str]) -> None:
        columns = list(LEADERBOARD_COLUMNS) + [m for m in metrics if m not in LEADERBOARD_COLUMNS]
        columns += sorted({k for row in rows for k in row if MEASURED_KEY.fullmatch(k)} - set(columns))
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for row in sorted(rows, key=lambda r: int(r["trial"])):
            writer.writerow({k: _cell(row.get(k)) for k in columns})
        write_atomic(self.path("leaderboard.csv"), out.getvalue())

    def read_leaderboard(self) -> list[dict[str, Any]]:
        """The rows as dicts with numbers parsed; empty when there is no leaderboard yet. A file that is not a
        leaderboard (binary, no `trial`/`status` columns, a trial that is not a number) is a UserError naming it."""
        path = self.path("leaderboard.csv")
        if not path.is_file():
            return []
        try:
            with open(path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                rows = [{k: _parse(v) for k, v in row.items()} for row in reader]
                columns = reader.fieldnames or []
        except (csv.Error, UnicodeDecodeError) as e:
            raise UserError(f"{path} is not a readable leaderboard ({e})") from None
        if rows and not {"trial", "status"} <= set(columns):
            raise UserError(f"{path} is not a leaderboard: no 'trial' and 'status' columns")
        for i, row in enumerate(rows):
            if not isinstance(row.get("trial"), int) or None in row:
                raise UserError(f"{path}: row {i + 2} is damaged (trial {row.get('trial')!r})")
        return rows

    def read_summary(self) -> dict[str, Any]:
        data = read_json(self.path("summary.json"), default={})
        return data if isinstance(data, dict) else {}

    def best_trial(self) -> int | None:
        """The number of the best trial (from summary.json; the leaderboard is in trial order)."""
        best = self.read_summary().get("best") or {}
        return best.get("trial")


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return value


def _parse(text: str) -> Any:
    if text == "" or text is None:
        return None
    if not isinstance(text, str):
        return text
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text
