"""Recording a fetch into the archive, and replaying it offline.

A raw asset's HTTP client already asks a page store before each request and hands it every
response it gets (``ResilientClient`` with a ``PageCheckpoint``: how a failed try resumes).
``ArchiveRecorder`` stands in that place during a live fetch: it passes every call on to the
day's checkpoint and also stores each body in the archive (content-addressed), noting the
request (method, URL and configured headers, secrets redacted), the status, the response
headers, the position and the time. ``ArchiveReplay`` stands there in ``archive`` mode: every
request is answered from the archived day, so the same parsing code reads the same bytes, and a
request the day never made fails at once. Landing files are recorded whole and restored into a
private landing folder for the file connectors to read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import httpx

from ingest_assets import jsontext
from ingest_assets.archive.store import ArchiveError, ArchiveStore, Manifest
from ingest_assets.connectors.base import (
    ENV_REF,
    MIN_SECRET_LENGTH,
    REDACTED,
    SECRET_NAME,
    PermanentFetchError,
)
from ingest_assets.connectors.checkpoint import SECRET_HEADERS
from ingest_assets.warehouse import ingest_home

FETCH_TAG = "ingest/fetch"
FETCH_MODES = ("live", "archive")


class NotArchived(PermanentFetchError):
    """The archive has no answer for what a fetch in ``archive`` mode asked: no retry helps."""


def archive_location() -> str:
    """``INGEST_ARCHIVE_URL``, or the folder ``archive`` in ``INGEST_HOME``."""
    configured = os.environ.get("INGEST_ARCHIVE_URL", "").strip()
    if configured:
        return configured
    return str(ingest_home() / "archive")


def fetch_mode(tags: Mapping[str, str] | None = None) -> str:
    """``live`` or ``archive``: the run tag ``ingest/fetch`` wins over ``INGEST_FETCH``."""
    mode = (tags or {}).get(FETCH_TAG) or os.environ.get("INGEST_FETCH") or "live"
    mode = mode.strip().lower()
    if mode not in FETCH_MODES:
        where = f"run tag {FETCH_TAG}" if (tags or {}).get(FETCH_TAG) else "INGEST_FETCH"
        raise ValueError(f"{where}: {mode!r} is not a fetch mode (one of {', '.join(FETCH_MODES)})")
    return mode


def secret_values(configured: Any) -> dict[str, str]:
    """The values of the environment variables a source's options refer to (``${NAME}``), by
    name: wherever they appear in what is archived, they are replaced by the reference."""
    names: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, str):
            names.update(ENV_REF.findall(value))
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)

    walk(configured)
    found = {name: os.environ.get(name, "") for name in sorted(names)}
    # A value this short would also blank innocent text; names that short are not secrets.
    return {name: value for name, value in found.items() if len(value) >= MIN_SECRET_LENGTH}


class Redactor:
    """Text as it may be archived: environment-held values and secret-named query values out."""

    def __init__(self, secrets: Mapping[str, str]) -> None:
        # Longest first: a secret that contains another is replaced whole.
        self.secrets = sorted(secrets.items(), key=lambda item: -len(item[1]))

    def text(self, value: str) -> str:
        for name, secret in self.secrets:
            # As sent, and as a URL carries it (percent-encoded in a path or a query).
            for form in {secret, quote(secret, safe=""), quote_plus(secret, safe="")}:
                value = value.replace(form, "${" + name + "}")
        return value

    def url(self, url: str | httpx.URL, params: Mapping[str, Any] | None = None) -> str:
        target = httpx.URL(str(url))
        if params:
            target = target.copy_merge_params({k: str(v) for k, v in params.items()})
        query = [
            (k, REDACTED if SECRET_NAME.search(k) else v) for k, v in target.params.multi_items()
        ]
        shown = target.copy_with(query=None).copy_merge_params(query) if query else target
        return self.text(str(shown))


def request_key(method: str, url: str | httpx.URL, params: Mapping[str, Any] | None) -> str:
    """A request as the archive finds it again: the method, the path and the query, not the
    host (an archive recorded against one server replays whatever the base URL is now)."""
    target = httpx.URL(str(url))
    if params:
        target = target.copy_merge_params({k: str(v) for k, v in params.items()})
    # A secret-named value is kept as its hash: the key still tells requests apart.
    query = sorted(
        (
            k,
            "sha256:" + hashlib.sha256(v.encode()).hexdigest()[:16] if SECRET_NAME.search(k) else v,
        )
        for k, v in target.params.multi_items()
    )
    return f"{method.upper()} {target.raw_path.split(b'?')[0].decode()}?" + "&".join(
        f"{k}={v}" for k, v in query
    )


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


class ArchiveRecorder:
    """A live fetch's page store: the day's checkpoint, with every body also archived."""

    def __init__(
        self,
        store: ArchiveStore,
        source: str,
        day: dt.date,
        checkpoint: Any = None,
        *,
        redactor: Redactor | None = None,
        request_headers: Mapping[str, str] | None = None,
    ) -> None:
        self.store = store
        self.source = source
        self.day = day
        self.checkpoint = checkpoint
        self.redactor = redactor or Redactor({})
        # As configured (``${TOKEN}`` stays a reference): never the value sent.
        self.request_headers = {
            k: self.redactor.text(str(v)) for k, v in (request_headers or {}).items()
        }
        self.entries: list[dict[str, Any]] = []

    @property
    def hits(self) -> int:
        return getattr(self.checkpoint, "hits", 0)

    @property
    def stored(self) -> int:
        return getattr(self.checkpoint, "stored", 0)

    def _entry(
        self, method: str, url: str, params: Mapping[str, Any] | None, content: bytes, headers: Any
    ) -> None:
        sha = self.store.put(content)
        kept = [
            (k, self.redactor.text(v))
            for k, v in httpx.Headers(headers).multi_items()
            if k.lower() not in SECRET_HEADERS
        ]
        self.entries.append(
            {
                "kind": "http",
                "position": len(self.entries),
                "method": method.upper(),
                "url": self.redactor.url(url, params),
                "key": self.redactor.text(request_key(method, url, params)),
                "request_headers": self.request_headers,
                "status": 200,
                "headers": kept,
                "object": sha,
                "size": len(content),
                "time": _now(),
            }
        )

    def load(
        self, url: str, params: Mapping[str, Any] | None = None, method: str = "GET"
    ) -> tuple[Any, httpx.Headers, str] | None:
        """A page an earlier try of the day stored (and so archived again here), or None."""
        if self.checkpoint is None:
            return None
        found = self.checkpoint.load_page(url, params, method)
        if found is None:
            return None
        body, headers, digest, content = found
        self._entry(method, url, params, content, headers)
        return body, headers, digest

    def save(
        self,
        url: str,
        params: Mapping[str, Any] | None,
        content: bytes,
        headers: httpx.Headers | Mapping[str, str],
        method: str = "GET",
    ) -> None:
        self._entry(method, url, params, content, headers)
        if self.checkpoint is not None:
            self.checkpoint.save(url, params, content, headers, method)

    def add_file(self, path: str | Path, landing_dir: str | Path | None) -> dict[str, Any]:
        """A landing file the fetch read, stored whole (streamed)."""
        path = Path(path)
        sha, size = self.store.put_file(path)
        shown = str(path)
        if landing_dir is not None and path.resolve().is_relative_to(Path(landing_dir).resolve()):
            shown = str(path.resolve().relative_to(Path(landing_dir).resolve()))
        entry = {
            "kind": "file",
            "position": len(self.entries),
            "path": self.redactor.text(shown),
            "object": sha,
            "size": size,
            "time": _now(),
        }
        self.entries.append(entry)
        return entry

    def commit(self, run_id: str, ingested_at: str = "") -> Manifest:
        """Write the day's manifest (the last write: the day is archived from now on)."""
        manifest = Manifest(
            self.source,
            self.day.isoformat(),
            self.entries,
            run_id=run_id,
            archived_at=_now(),
            ingested_at=ingested_at,
        )
        self.store.write_manifest(manifest)
        return manifest


class ArchiveReplay:
    """An ``archive``-mode fetch's page store: every answer from the archived day."""

    def __init__(self, store: ArchiveStore, manifest: Manifest) -> None:
        self.store = store
        self.manifest = manifest
        self.by_key = {e["key"]: e for e in manifest.entries if e["kind"] == "http"}
        self.files = [e for e in manifest.entries if e["kind"] == "file"]
        self.hits = 0
        self.stored = 0
        self.redactor = Redactor({})

    @classmethod
    def open(cls, store: ArchiveStore, source: str, day: dt.date) -> ArchiveReplay:
        manifest = store.manifest(source, day.isoformat())
        if manifest is None:
            raise NotArchived(
                f"source {source}, day {day.isoformat()}: never archived in {store.location} "
                f"(INGEST_FETCH=archive reads only archived days; fetch it live first)"
            )
        return cls(store, manifest)

    def with_secrets(self, redactor: Redactor) -> ArchiveReplay:
        self.redactor = redactor
        return self

    def load(
        self, url: str, params: Mapping[str, Any] | None = None, method: str = "GET"
    ) -> tuple[Any, httpx.Headers, str]:
        key = self.redactor.text(request_key(method, url, params))
        entry = self.by_key.get(key)
        if entry is None:
            raise NotArchived(
                f"source {self.manifest.source}, day {self.manifest.day}: the archive has no "
                f"response for {self.redactor.url(url, params)} (the source's configuration "
                "asks for other pages than when the day was archived)"
            )
        try:
            content = self.store.get(entry["object"])
        except ArchiveError as exc:
            raise NotArchived(
                f"source {self.manifest.source}, day {self.manifest.day}: {exc}"
            ) from None
        self.hits += 1
        headers = httpx.Headers(entry.get("headers") or [])
        return jsontext.loads(content), headers, entry["object"]

    def save(self, *args: Any, **kwargs: Any) -> None:
        """Nothing is fetched in archive mode, so nothing new is kept."""

    def restore_files(self, landing_dir: str | Path | None = None) -> Path:
        """The day's landing files, restored under a new private folder (returned) at the
        paths they had under the landing folder."""
        folder = Path(tempfile.mkdtemp(prefix="ingest-archive-", dir=landing_dir))
        for entry in self.files:
            relative = Path(entry["path"])
            if relative.is_absolute():
                relative = Path(*relative.parts[1:])
            self.store.restore(entry["object"], folder / relative)
        return folder
