"""The raw archive's storage: content-addressed objects and one manifest per (source, day).

Layout under ``INGEST_ARCHIVE_URL`` (a folder, or any fsspec URL: ``s3://bucket/prefix``,
``file:///...``, ``memory://...``)::

    objects/<sha256[:2]>/<sha256>.gz      a body or file, gzip-compressed; named by the sha256
                                          of its bytes as fetched, so the same body twice is
                                          stored once
    manifests/<source>/<YYYY-MM-DD>.json  what one successful fetch read, in fetch order

A manifest is written last, in one piece (a local file through a temporary name and an atomic
rename; on an object store one PUT, which readers see whole or not at all): a day has an archive
only once every object it names is stored. No dagster here.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec

_SOURCE = re.compile(r"^[A-Za-z0-9_.-]+$")
# The fastest level: archiving runs beside every fetch (zlib works outside the GIL, so it
# overlaps the parsing), and JSON bodies still shrink several times.
COMPRESS_LEVEL = 1


class ArchiveError(RuntimeError):
    """The archive cannot give what was asked (a day never archived, a missing object)."""


def _is_url(location: str) -> bool:
    return "://" in location


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What one fetch of ``source`` for ``day`` read: its entries in fetch order."""

    source: str
    day: str
    entries: list[dict[str, Any]]
    run_id: str = ""
    archived_at: str = ""
    # The raw rows' _ingested_at when the day was fetched: a replay writes the same rows.
    ingested_at: str = ""

    def as_json(self) -> bytes:
        return json.dumps(
            {
                "version": 1,
                "source": self.source,
                "partition": self.day,
                "run_id": self.run_id,
                "archived_at": self.archived_at,
                "ingested_at": self.ingested_at,
                "entries": self.entries,
            },
            indent=1,
            ensure_ascii=False,
        ).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        body = json.loads(data)
        return cls(
            source=body["source"],
            day=body["partition"],
            entries=list(body["entries"]),
            run_id=body.get("run_id", ""),
            archived_at=body.get("archived_at", ""),
            ingested_at=body.get("ingested_at", ""),
        )

    @property
    def objects(self) -> set[str]:
        return {e["object"] for e in self.entries if e.get("object")}


class ArchiveStore:
    """Objects and manifests under one location (see the module docstring)."""

    def __init__(self, location: str | Path) -> None:
        self.location = str(location)
        if _is_url(self.location):
            # A new client each time: credentials and endpoint are read when the store opens.
            self.fs, root = fsspec.core.url_to_fs(self.location, skip_instance_cache=True)
        else:
            self.fs, root = fsspec.filesystem("file"), str(Path(self.location).resolve())
        self.root = root.rstrip("/")
        self.local = "file" in (self.fs.protocol if isinstance(self.fs.protocol, tuple) else (
            self.fs.protocol,
        ))  # fmt: skip

    def __repr__(self) -> str:
        return f"ArchiveStore({self.location!r})"

    def _path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def object_path(self, sha: str) -> str:
        return self._path("objects", sha[:2], f"{sha}.gz")

    def manifest_path(self, source: str, day: str) -> str:
        if not _SOURCE.match(source):
            raise ValueError(f"not a source name: {source!r}")
        return self._path("manifests", source, f"{day}.json")

    # -- objects ---------------------------------------------------------------------------

    def put(self, data: bytes) -> str:
        """Store ``data`` (once, whatever the number of calls); returns its sha256."""
        sha = digest(data)
        path = self.object_path(sha)
        if not self.fs.exists(path):
            self._write(path, gzip.compress(data, compresslevel=COMPRESS_LEVEL, mtime=0))
        return sha

    def put_file(self, source_path: str | Path, chunk: int = 1 << 20) -> tuple[str, int]:
        """Store a file's bytes, streamed (a landing file may be large); (sha256, size)."""
        hasher, size = hashlib.sha256(), 0
        with open(source_path, "rb") as handle:
            for block in iter(lambda: handle.read(chunk), b""):
                hasher.update(block)
                size += len(block)
        sha = hasher.hexdigest()
        path = self.object_path(sha)
        if not self.fs.exists(path):
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            self.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
            with (
                open(source_path, "rb") as handle,
                self.fs.open(tmp, "wb") as raw,
                gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=COMPRESS_LEVEL, mtime=0) as out,
            ):
                for block in iter(lambda: handle.read(chunk), b""):
                    out.write(block)
            self.fs.mv(tmp, path)
        return sha, size

    def get(self, sha: str) -> bytes:
        try:
            with self.fs.open(self.object_path(sha), "rb") as handle:
                data = gzip.decompress(handle.read())
        except FileNotFoundError:
            raise ArchiveError(f"archive object {sha} is missing from {self.location}") from None
        if digest(data) != sha:
            raise ArchiveError(f"archive object {sha} in {self.location} is damaged")
        return data

    def restore(self, sha: str, target: str | Path, chunk: int = 1 << 20) -> Path:
        """Write an object's bytes to a local file (streamed), checking its hash."""
        target = Path(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        try:
            with (
                self.fs.open(self.object_path(sha), "rb") as raw,
                gzip.GzipFile(fileobj=raw, mode="rb") as src,
                target.open("wb") as out,
            ):
                for block in iter(lambda: src.read(chunk), b""):
                    hasher.update(block)
                    out.write(block)
        except FileNotFoundError:
            raise ArchiveError(f"archive object {sha} is missing from {self.location}") from None
        if hasher.hexdigest() != sha:
            target.unlink(missing_ok=True)
            raise ArchiveError(f"archive object {sha} in {self.location} is damaged")
        return target

    # -- manifests -------------------------------------------------------------------------

    def write_manifest(self, manifest: Manifest) -> str:
        path = self.manifest_path(manifest.source, manifest.day)
        self._write(path, manifest.as_json(), durable=True)
        return path

    def manifest(self, source: str, day: str) -> Manifest | None:
        try:
            with self.fs.open(self.manifest_path(source, day), "rb") as handle:
                return Manifest.from_json(handle.read())
        except FileNotFoundError:
            return None

    def days(self, source: str) -> list[str]:
        folder = self._path("manifests", source)
        # Object stores' listings are cached by fsspec; another process may have written since.
        self.fs.invalidate_cache(folder)
        if not self.fs.exists(folder):
            return []
        names = [p.rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False)]
        return sorted(n.removesuffix(".json") for n in names if n.endswith(".json"))

    def sources(self) -> list[str]:
        folder = self._path("manifests")
        self.fs.invalidate_cache(folder)
        if not self.fs.exists(folder):
            return []
        return sorted(p.rsplit("/", 1)[-1] for p in self.fs.ls(folder, detail=False))

    def manifests(self) -> Iterator[Manifest]:
        for source in self.sources():
            for day in self.days(source):
                found = self.manifest(source, day)
                if found is not None:
                    yield found

    # -- retention -------------------------------------------------------------------------

    def prune(self, keep_days: Mapping[str, int | None], today: dt.date) -> dict[str, Any]:
        """Drop the manifests of days older than each source's ``keep_days`` (None: keep all),
        then every object no remaining manifest names. Returns what was removed."""
        removed_days: dict[str, list[str]] = {}
        for source in self.sources():
            keep = keep_days.get(source)
            if keep is None:
                continue
            oldest = today - dt.timedelta(days=keep)
            for day in self.days(source):
                if dt.date.fromisoformat(day) < oldest:
                    self.fs.rm(self.manifest_path(source, day))
                    removed_days.setdefault(source, []).append(day)
        referenced: set[str] = set()
        for manifest in self.manifests():
            referenced |= manifest.objects
        removed_objects = 0
        objects = self._path("objects")
        self.fs.invalidate_cache(objects)
        if self.fs.exists(objects):
            for path in self.fs.find(objects):
                name = path.rsplit("/", 1)[-1]
                if name.endswith(".gz") and name.removesuffix(".gz") not in referenced:
                    self.fs.rm(path)
                    removed_objects += 1
        return {"days": removed_days, "objects": removed_objects}

    # -- writing ---------------------------------------------------------------------------

    def _write(self, path: str, data: bytes, durable: bool = False) -> None:
        """One whole file: locally through a temporary name and an atomic rename; on an object
        store a single PUT (never visible half written). ``durable``: on disk before the rename
        (a manifest; an object is checked against its name when read, so it need not be)."""
        parent = path.rsplit("/", 1)[0]
        self.fs.makedirs(parent, exist_ok=True)
        if self.local:
            tmp = f"{path}.{uuid.uuid4().hex}.tmp"
            with open(tmp, "wb") as out:
                out.write(data)
                if durable:
                    out.flush()
                    os.fsync(out.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)
