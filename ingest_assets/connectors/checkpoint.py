"""Page checkpoints: what a fetch already got for a (source, day) survives a failed or killed try.

Every successful response of a fetch is kept as a file under
``INGEST_HOME/checkpoints/<source>/<day>/``; a later try of the same day asks its
``ResilientClient`` for the same request and gets the stored body instead of a new request, so
page 1,900 of 2,000 failing costs the 101 pages not yet fetched, not 2,000. The raw asset clears
the folder once the day is written: the next fetch of the day (a new snapshot) asks the API again.

A file is named by a hash of the request (method, URL, parameters), so neither the URL nor its
parameters (which may hold an API key) are written out, and request headers (tokens) are never
part of it. It holds one line of JSON with the response headers (minus cookies and
authentication challenges), then the body's bytes exactly as the API sent them: nothing is
encoded again, and a resumed page is parsed exactly as a live one. Files are written to a temporary name and renamed into place
(``os.replace`` is atomic), so a killed process leaves complete pages or none, never half a page.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from ingest_assets import jsontext

DEFAULT_MAX_AGE_S = 12 * 3600

# Response headers that are, or may carry, credentials (never kept, here or in the archive).
SECRET_HEADERS = frozenset(
    {"set-cookie", "set-cookie2", "www-authenticate", "proxy-authenticate", "authorization"}
)


def request_key(method: str, url: str, params: Mapping[str, Any] | None) -> str:
    """A stable hash of a request; parameters in any order give the same key."""
    canonical = json.dumps(
        [method.upper(), url, sorted((str(k), str(v)) for k, v in (params or {}).items())],
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass
class PageCheckpoint:
    """The stored responses of one (source, day); ``hits`` and ``stored`` count this fetch's use."""

    folder: Path
    hits: int = 0
    stored: int = 0

    @classmethod
    def for_fetch(
        cls,
        home: str | Path,
        source_name: str,
        day: str | Any,
        max_age_s: float = DEFAULT_MAX_AGE_S,
    ) -> PageCheckpoint:
        """The checkpoint of ``source_name`` for ``day`` (a date or its ISO text) in ``home``.

        Pages stored more than ``max_age_s`` ago are dropped first: a retry minutes or hours
        later resumes, but a day fetched again much later (its tries long given up) takes a
        fresh snapshot instead of mixing old pages with new ones.
        """
        day_text = day if isinstance(day, str) else day.isoformat()
        source_folder = Path(home) / "checkpoints" / source_name
        # Every day of the source, not only this one: a day never fetched again (or whose
        # clear() was missed) does not keep its pages on disk for ever.
        for folder in source_folder.glob("*"):
            # An empty folder counts by its own time: another fetch may have just made it.
            stored = [p.stat().st_mtime for p in folder.glob("*.page")] or [folder.stat().st_mtime]
            if time.time() - min(stored) > max_age_s:
                cls(folder).clear()
        return cls(source_folder / day_text)

    def _path(self, method: str, url: str, params: Mapping[str, Any] | None) -> Path:
        return self.folder / f"{request_key(method, url, params)}.page"

    def load(
        self, url: str, params: Mapping[str, Any] | None = None, method: str = "GET"
    ) -> tuple[Any, httpx.Headers, str] | None:
        """The stored (body, headers, sha256 of the body's bytes) of a request, or None when it
        was not fetched yet."""
        found = self.load_page(url, params, method)
        return None if found is None else found[:3]

    def load_page(
        self, url: str, params: Mapping[str, Any] | None = None, method: str = "GET"
    ) -> tuple[Any, httpx.Headers, str, bytes] | None:
        """``load`` and the body's bytes as the API sent them (what the archive keeps)."""
        path = self._path(method, url, params)
        try:
            head, newline, content = path.read_bytes().partition(b"\n")
            if not newline:
                raise ValueError("no body")
            headers = httpx.Headers(json.loads(head)["headers"])
            body = jsontext.loads(content)
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, RecursionError):
            # Not one of ours, or damaged on disk: ask the API again rather than fail the fetch.
            path.unlink(missing_ok=True)
            return None
        self.hits += 1
        return body, headers, hashlib.sha256(content).hexdigest(), content

    def save(
        self,
        url: str,
        params: Mapping[str, Any] | None,
        content: bytes,
        headers: httpx.Headers | Mapping[str, str],
        method: str = "GET",
    ) -> None:
        """Keep a successful response (its body's bytes); atomic, so a reader never sees half a
        file."""
        kept = [(k, v) for k, v in httpx.Headers(headers).multi_items() if k not in SECRET_HEADERS]
        head = json.dumps({"headers": kept}).encode()
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self._path(method, url, params)
        handle, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".page")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(head + b"\n")
                out.write(content)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.stored += 1

    def pages(self) -> int:
        """How many responses are stored (temporary files of a killed write are not counted)."""
        if not self.folder.is_dir():
            return 0
        return sum(1 for p in self.folder.glob("*.page") if not p.name.startswith(".tmp-"))

    def clear(self) -> None:
        """Forget the day's stored responses: call once the day's records are written."""
        shutil.rmtree(self.folder, ignore_errors=True)
