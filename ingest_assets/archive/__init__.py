"""The raw archive: what each raw asset fetched, kept to re-materialize any day offline."""

from ingest_assets.archive.fetch import (
    FETCH_TAG,
    ArchiveRecorder,
    ArchiveReplay,
    NotArchived,
    Redactor,
    archive_location,
    fetch_mode,
    secret_values,
)
from ingest_assets.archive.store import ArchiveError, ArchiveStore, Manifest

__all__ = [
    "FETCH_TAG",
    "ArchiveError",
    "ArchiveRecorder",
    "ArchiveReplay",
    "ArchiveStore",
    "Manifest",
    "NotArchived",
    "Redactor",
    "archive_location",
    "fetch_mode",
    "secret_values",
]
