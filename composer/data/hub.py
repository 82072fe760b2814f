"""Whether the Hugging Face hub can be reached, asked before a hub download so that an offline machine gets one
clear error at once (the hub client would otherwise retry for about 20 s, logging each retry)."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE")


def offline_reason() -> str | None:
    """Why the hub cannot be reached (an offline variable is set, or its host does not resolve), else None."""
    for name in OFFLINE_VARIABLES:
        if os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{name} is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    host = urlparse(endpoint).hostname or endpoint
    try:
        socket.getaddrinfo(host, 443)
    except OSError:
        return f"no network: {host} cannot be resolved"
    return None
