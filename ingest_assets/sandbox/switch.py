"""``INGEST_SANDBOX=1``: the shipped REST sources talk to the loopback sandbox, offline.

The definitions module calls :func:`use_sandbox_if_requested` when it loads. Every process that
loads the definitions (the ``dagster`` CLI, the code server of ``dagster dev``, run workers,
step processes, Celery workers) then serves its own sandbox on a free loopback port in a daemon
thread and points ``DUMMYJSON_BASE_URL``, ``OPEN_METEO_BASE_URL`` and ``GITHUB_API_URL`` at
it. So no process depends on another one staying alive, no port is fixed (nothing to collide
with), and nothing keeps running when the process exits. A base URL the user set explicitly is
left alone; one inherited from a parent process's sandbox is replaced by this process's own.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import MutableMapping

from ingest_assets.sandbox.server import Sandbox

SWITCH = "INGEST_SANDBOX"
URL_VARIABLES = ("DUMMYJSON_BASE_URL", "OPEN_METEO_BASE_URL", "GITHUB_API_URL")
# The URL this switch set: a child process inherits it and knows it may replace it.
SET_BY_SWITCH = "INGEST_SANDBOX_URL"

_lock = threading.Lock()
_sandbox: Sandbox | None = None


def sandbox_requested(env: MutableMapping[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get(SWITCH, "").strip().lower() in {"1", "true", "yes", "on"}


def use_sandbox_if_requested() -> str | None:
    """With ``INGEST_SANDBOX=1``: serve the sandbox in this process, point the REST sources at it.

    Returns the sandbox's URL, or None when the switch is off or every base URL was set by hand.
    """
    global _sandbox
    env = os.environ
    if not sandbox_requested(env):
        return None
    inherited = env.get(SET_BY_SWITCH)
    ours = [v for v in URL_VARIABLES if not env.get(v) or env.get(v) == inherited]
    if not ours:
        return None
    with _lock:
        if _sandbox is None:
            _sandbox = Sandbox(port=0).start()
        url = _sandbox.url
    for variable in ours:
        env[variable] = url
    env[SET_BY_SWITCH] = url
    logging.getLogger("ingest_assets").info(
        "%s=1: %s point at the sandbox API on %s", SWITCH, ", ".join(ours), url
    )
    return url
