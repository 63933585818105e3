"""The raw assets' use of the archive: record a live day, or read an archived one.

``DayArchive.for_fetch`` decides, per source and day, where the fetch's pages come from and go
to: live (the day's checkpoint, with every body and landing file also archived, the manifest
written once the day is fetched) or ``archive`` mode (``INGEST_FETCH=archive`` or the run tag
``ingest/fetch: archive``: every answer from the archived day, landing files restored into a
private folder, nothing asked of the network). ``archive: {enabled: false}`` on a source
records nothing (its checkpoint alone).
"""

from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from ingest_assets.archive import (
    ArchiveRecorder,
    ArchiveReplay,
    ArchiveStore,
    NotArchived,
    Redactor,
    archive_location,
    fetch_mode,
    secret_values,
)
from ingest_assets.config import SourceConfig, landing_dir
from ingest_assets.connectors.base import Connector, FetchContext

# The connectors whose reads go through the archive: HTTP bodies and landing files.
ARCHIVED_CONNECTORS = ("rest", "csv", "jsonl", "xml")


@dataclass
class DayArchive:
    """Where one day's fetch reads its pages from and records them to."""

    mode: str
    page_store: Any
    recorder: ArchiveRecorder | None = None
    replay: ArchiveReplay | None = None
    restored: Path | None = None

    @classmethod
    def for_fetch(
        cls, source: SourceConfig, day: dt.date, checkpoint: Any, tags: dict[str, str]
    ) -> DayArchive:
        mode = fetch_mode(tags)
        redactor = Redactor(secret_values(source.model_dump()))
        if mode == "archive":
            if source.connector not in ARCHIVED_CONNECTORS:
                # Its records come neither from HTTP bodies nor from landing files: replaying
                # it would query the live database, not the archive.
                raise NotArchived(
                    f"source {source.name}, day {day.isoformat()}: a {source.connector} source "
                    f"is not archived (only {', '.join(ARCHIVED_CONNECTORS)} sources are); "
                    "materialize it live"
                )
            store = ArchiveStore(archive_location())
            replay = ArchiveReplay.open(store, source.name, day).with_secrets(redactor)
            restored = replay.restore_files() if replay.files else None
            return cls(mode, replay, replay=replay, restored=restored)
        if not source.archive.enabled:
            return cls(mode, checkpoint)
        headers = {**source.http.headers, **(source.options.get("headers") or {})}
        recorder = ArchiveRecorder(
            ArchiveStore(archive_location()),
            source.name,
            day,
            checkpoint,
            redactor=redactor,
            request_headers=headers,
        )
        return cls(mode, recorder, recorder=recorder)

    @property
    def landing_dir(self) -> Path | None:
        """The folder file sources read from: the restored archive in archive mode."""
        return self.restored

    def before_fetch(self, connector: Connector, ctx: FetchContext) -> None:
        """A landing file is archived before it is parsed (what was read, exactly); its rows'
        ``_source_ref`` name its archive object, live and replayed alike."""
        file_path = getattr(connector, "file_path", None)
        if file_path is None:
            return
        path = Path(file_path(ctx))
        if self.recorder is not None and path.is_file():
            entry = self.recorder.add_file(path, landing_dir())
            ctx.file_objects[str(path)] = entry["object"]
        if self.replay is not None and self.restored is not None:
            for entry in self.replay.files:
                ctx.file_objects[str(self.restored / entry["path"])] = entry["object"]

    def ingested_at(self, live: Any) -> Any:
        """The rows' ``_ingested_at``: when the archived day was fetched, in archive mode."""
        if self.replay is not None and self.replay.manifest.ingested_at:
            return pd.Timestamp(self.replay.manifest.ingested_at)
        return live

    def commit(self, run_id: str, ingested_at: Any) -> dict[str, Any]:
        """The day is fetched: write its manifest (live); what the UI shows of it."""
        if self.recorder is not None:
            manifest = self.recorder.commit(run_id, pd.Timestamp(ingested_at).isoformat())
            return {
                "archive": "recorded",
                "archive_objects": len(manifest.objects),
                "archive_bytes": sum(e.get("size", 0) for e in manifest.entries),
            }
        if self.replay is not None:
            return {"archive": "replayed", "archive_objects": len(self.replay.manifest.objects)}
        return {"archive": "off"}

    def close(self) -> None:
        if self.restored is not None:
            shutil.rmtree(self.restored, ignore_errors=True)
