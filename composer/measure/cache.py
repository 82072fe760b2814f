"""Measurements kept in a run folder, so each distinct architecture is measured once per device and setting:
`<run>/measure/<arch_id>-<device>-t<threads>-<context>-<hash>.json`, the hash over everything else the number
depends on (batch, dtype, the protocol's repeats and version: `MeasureSettings.cache_fields`). Files are written
atomically; the folder is the run's own (nothing is written anywhere else)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from composer.atomic import write_json
from composer.measure.protocol import PROTOCOL_VERSION, MeasureSettings

FOLDER = "measure"


def cache_name(arch_id: str, context: int, settings: MeasureSettings) -> str:
    fields = json.dumps({**settings.cache_fields(), "protocol": PROTOCOL_VERSION}, sort_keys=True)
    digest = hashlib.sha256(fields.encode()).hexdigest()[:8]
    device = re.sub(r"[^A-Za-z0-9]", "", settings.device)
    return f"{arch_id}-{device}-t{settings.threads}-{context}-{digest}.json"


class MeasureCache:
    """The measurements under `root` (a run folder's `measure/`)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, arch_id: str, context: int, settings: MeasureSettings) -> Path:
        return self.root / cache_name(arch_id, context, settings)

    def get(self, arch_id: str, context: int, settings: MeasureSettings) -> dict[str, Any] | None:
        path = self.path(arch_id, context, settings)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None          # absent or unreadable: measured again (and rewritten whole)
        return data if isinstance(data, dict) and data.get("arch_id") == arch_id else None

    def put(self, measurement: dict[str, Any], settings: MeasureSettings) -> None:
        write_json(self.path(measurement["arch_id"], int(measurement["context"]), settings), measurement)

    def of_arch(self, arch_id: str) -> list[dict[str, Any]]:
        """Every measurement of `arch_id` kept here, by device then context."""
        found = []
        for path in sorted(self.root.glob(f"{arch_id}-*.json")) if self.root.is_dir() else []:
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("arch_id") == arch_id and isinstance(data.get("context"), int):
                found.append(data)
        return sorted(found, key=lambda m: (str(m.get("device")), m["context"]))
