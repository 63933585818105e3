"""The connector protocol: an async generator of record batches for one partition date."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import quote, quote_plus

from pydantic import BaseModel, ConfigDict

from ingest_assets.config import ConfigError, SourceConfig, resolve_env

if TYPE_CHECKING:
    from ingest_assets.connectors.checkpoint import PageCheckpoint

T = TypeVar("T")
Record = dict[str, Any]
Batch = list[Record]


class Page(list):
    """A batch of records that knows where each came from: ``refs[i]`` is the ``_source_ref``
    of record ``i`` (``<sha256 of the body or file>#<index in the page>`` or ``#L<line>``)."""

    def __init__(self, records: Iterable[Record] = (), refs: list[str] | None = None) -> None:
        super().__init__(records)
        self.refs = refs

    def keep_refs(self, records: Iterable[Record]) -> Page:
        """Other records in the same places (a record enriched, say), with these refs."""
        return Page(records, self.refs)


def source_refs(batch: Batch) -> list[str] | None:
    """The ``_source_ref`` of each record of a batch, when its connector said."""
    refs = getattr(batch, "refs", None)
    return refs if refs is not None and len(refs) == len(batch) else None


# Option and header names that say their value is a credential.
SECRET_NAME = re.compile(
    r"auth|key|token|secret|passw|cookie|session|signature|credential", re.IGNORECASE
)
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-[^}]*)?\}")
REDACTED = "REDACTED"
# Shorter values would blank innocent text (a page number, a date part); they are no secrets.
MIN_SECRET_LENGTH = 4


class Secrets:
    """Redaction of a fetch's secret values from any text shown: messages, logs, metadata.

    A value is also looked for as a URL carries it (percent-encoded in a path or a query), so
    a token in a URL path is caught in a URL however it is written out.
    """

    def __init__(self, values: Iterable[str] = ()) -> None:
        forms: set[str] = set()
        for value in values:
            if len(value) < MIN_SECRET_LENGTH:
                continue
            forms.update((value, quote(value, safe=""), quote(value, safe="/:@!$&'()*+,;=~")))
            forms.add(quote_plus(value))
        # Longest first: a secret holding another is replaced whole.
        self.forms = sorted(forms, key=len, reverse=True)

    def __bool__(self) -> bool:
        return bool(self.forms)

    def __call__(self, text: str) -> str:
        for form in self.forms:
            if form in text:
                text = text.replace(form, REDACTED)
        return text

    def scrub(self, exc: BaseException) -> None:
        """Redact an exception's message and those of its causes, as tracebacks show them all."""
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen and self:
            seen.add(id(current))
            current.args = tuple(self(a) if isinstance(a, str) else a for a in current.args)
            current = current.__cause__ or current.__context__


class RedactingLog:
    """A logger stand-in that formats each message and redacts it before passing it on."""

    def __init__(self, log: Any, secrets: Secrets) -> None:
        self._log = log
        self._secrets = secrets

    def _emit(self, level: str, message: Any, *args: Any) -> None:
        text = str(message) % args if args else str(message)
        getattr(self._log, level)(self._secrets(text))

    def debug(self, message: Any, *args: Any) -> None:
        self._emit("debug", message, *args)

    def info(self, message: Any, *args: Any) -> None:
        self._emit("info", message, *args)

    def warning(self, message: Any, *args: Any) -> None:
        self._emit("warning", message, *args)

    def error(self, message: Any, *args: Any) -> None:
        self._emit("error", message, *args)


def secret_values(options: Mapping[str, Any], env: Mapping[str, str] | None = None) -> list[str]:
    """The values in a source's options that must never be shown, as sent (resolved).

    Secret are: every environment value an option refers to (``${NAME}``), but for a
    ``base_url``'s own (a plain address; a variable named like a credential still counts),
    and the whole value of any field named like a credential (``api_key``, ``Authorization``).
    """
    env = os.environ if env is None else env
    found: list[str] = []

    def walk(value: Any, name: str) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(item, str(key))
            return
        if isinstance(value, list | tuple):
            for item in value:
                walk(item, name)
            return
        if not isinstance(value, str):
            return
        for ref in ENV_REF.finditer(value):
            if env.get(ref.group(1)) and (name != "base_url" or SECRET_NAME.search(ref.group(1))):
                found.append(env[ref.group(1)])
        if SECRET_NAME.search(name):
            # Unset: nothing to hide, and the fetch fails on it by itself.
            with contextlib.suppress(ConfigError):
                found.append(resolve_env(value, env))

    walk(options, "")
    return found


class FetchError(Exception):
    """A fetch failed; the message is one line naming the source, the day and the URL or file.

    ``permanent`` says whether trying again can help: a raw asset fails a permanent error at
    once, without step retries. An instance may override its class's value.
    """

    permanent: ClassVar[bool] = False

    def __init__(self, message: str, *, permanent: bool | None = None) -> None:
        super().__init__(" ".join(str(message).splitlines()))
        if permanent is not None:
            self.permanent = permanent  # type: ignore[misc]
        self.located = False

    def locate(self, source: str, day: dt.date) -> FetchError:
        """Prefix the message with the source and day once (connectors call this on the way out)."""
        if not self.located:
            self.args = (f"source {source}, day {day.isoformat()}: {self.args[0]}",)
            self.located = True
        return self


class PermanentFetchError(FetchError):
    """Cannot succeed on retry: a 4xx answer, an invalid URL, a config or shape mistake."""

    permanent = True


class PagingError(PermanentFetchError):
    """Paging broke an invariant: max_pages reached, a page repeated, a total contradicted."""


class FileParseError(PermanentFetchError):
    """A whole file cannot be read (encoding, syntax, forbidden XML); names the line/column."""


@dataclass
class FetchStats:
    """What a fetch cost, as reported in ``metrics.ingestion``.

    ``requests`` counts attempts (a file read is one), ``failed_requests`` the attempts that
    failed, ``retries`` the attempts beyond the first of each logical request.
    """

    requests: int = 0
    retries: int = 0
    failed_requests: int = 0
    records: int = 0
    batches: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class FetchContext:
    partition_date: dt.date
    stats: FetchStats = field(default_factory=FetchStats)
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("ingest_assets"))
    env: Mapping[str, str] | None = None
    on_progress: Callable[[str], None] | None = None
    # Responses already fetched for this (source, day) by an earlier try; None: no resume.
    checkpoint: PageCheckpoint | None = None
    # The landing folder file sources read (None: INGEST_LANDING_DIR); a restored archive.
    landing_dir: Path | None = None
    # A landing file's archive object (sha256), by path: its rows' _source_ref name it.
    file_objects: dict[str, str] = field(default_factory=dict)

    def progress(self, message: str) -> None:
        if self.on_progress is not None:
            self.on_progress(message)

    def template_values(self, **extra: Any) -> dict[str, Any]:
        """The names a configured string may use: ``{date}``, ``{landing_dir}`` and extras."""
        from ingest_assets.config import landing_dir

        landing = self.landing_dir or landing_dir()
        return {"date": self.partition_date.isoformat(), "landing_dir": str(landing), **extra}


class ConnectorOptions(BaseModel):
    """Base for each connector's own options, validated when the sources file loads."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Connector(ABC):
    """Fetches one source's records for one partition date, in batches.

    Subclasses set ``kind`` (the ``connector:`` value in sources.yaml) and ``Options`` (a
    pydantic model of their own fields), and implement ``fetch`` as an async generator.
    """

    kind: ClassVar[str]
    Options: ClassVar[type[ConnectorOptions]] = ConnectorOptions

    def __init__(self, source: SourceConfig) -> None:
        self.source = source
        self.options = self.Options.model_validate(source.options)

    def resolved(self, value: Any, ctx: FetchContext) -> Any:
        """Resolve environment references at run time (never stored in Dagster)."""
        return resolve_env(value, ctx.env)

    def secrets(self, ctx: FetchContext) -> Secrets:
        """What this source must never show in a message or a log line (see ``secret_values``)."""
        configured = {**self.source.options, "http_headers": dict(self.source.http.headers)}
        return Secrets(secret_values(configured, ctx.env))

    @abstractmethod
    def fetch(self, ctx: FetchContext) -> AsyncIterator[Batch]:
        """Yield batches of records (plain dicts) for ``ctx.partition_date``."""


async def stream(connector: Connector, ctx: FetchContext) -> AsyncIterator[Batch]:
    """The connector's batches, in the source's order, counted in ``ctx.stats``.

    Every error on the way out is a ``FetchError`` whose one-line message starts with the
    source and the day; use this (not ``connector.fetch``) to consume a connector. No error
    leaves with a secret value of the source in its message or its causes' (connectors name
    URLs without them already; this is the last line).
    """
    secrets = connector.secrets(ctx)
    try:
        async for batch in connector.fetch(ctx):
            ctx.stats.batches += 1
            ctx.stats.records += len(batch)
            yield batch
    except FetchError as exc:
        exc.locate(connector.source.name, ctx.partition_date)
        secrets.scrub(exc)
        raise
    except ConfigError as exc:
        # Resolved at run time (an unset environment variable, an unknown template name):
        # no retry can fix it.
        raise PermanentFetchError(secrets(str(exc))).locate(
            connector.source.name, ctx.partition_date
        ) from None
    except Exception as exc:
        secrets.scrub(exc)
        raise


async def _drain(connector: Connector, ctx: FetchContext, each: Callable[[Batch], T]) -> list[T]:
    return [each(batch) async for batch in stream(connector, ctx)]


def collect(
    connector: Connector, ctx: FetchContext, each: Callable[[Batch], T] = lambda batch: batch
) -> list[T]:
    """Run a connector to completion from synchronous code (an asset body).

    ``each`` turns every batch into what the caller keeps (e.g. a DataFrame) as it arrives, so
    the plain-dict records of a batch are released before the next batch is fetched.
    """
    return asyncio.run(_drain(connector, ctx, each))
