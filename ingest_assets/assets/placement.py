"""Where a step ran: host, process and Celery worker, for the metadata of what it wrote.

With Celery workers on several machines, the UI then shows for each partition which host and
worker materialized it (and a re-run after a lost worker shows where it went instead).
"""

from __future__ import annotations

import os
import socket

import dagster as dg


def celery_worker_name() -> str | None:
    """The name of the Celery worker running the current task (``name@host``), if any."""
    try:
        from celery import current_task
    except ImportError:
        return None
    # A proxy: false outside a task (a multiprocess or in-process step).
    if not current_task:
        return None
    return getattr(current_task.request, "hostname", None) or None


def where_it_ran() -> dict[str, dg.MetadataValue]:
    """Metadata naming the host, pid and Celery worker (when there is one) of this step."""
    found: dict[str, dg.MetadataValue] = {
        "ran_on_host": dg.MetadataValue.text(socket.gethostname()),
        "ran_in_pid": dg.MetadataValue.int(os.getpid()),
    }
    worker = celery_worker_name()
    if worker:
        found["celery_worker"] = dg.MetadataValue.text(worker)
    return found
