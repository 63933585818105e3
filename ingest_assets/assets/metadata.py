"""What the UI shows about each asset, applied over the built assets in ``definitions.py``.

Nothing here builds an asset: ``with_ui_metadata`` maps the specs of assets built elsewhere, and
reads only their keys (``<layer>/<name>``), so it keeps working when the asset factories change.

- ``dagster/column_schema``: the table's columns from its Pandera schema (the dataset's compiled
  schemas; ``quality.schemas`` for the tables every dataset shares):
  type, nullability, uniqueness, checks as constraints, descriptions. A raw table has no model:
  its system columns plus the fields the source declares (``fields:`` in sources.yaml, else the
  fields its mapping reads).
- owners: the ``owners:`` of the sources feeding the asset, else ``DEFAULT_OWNER``.
- the group and a kind named for the layer (``raw``, ``cleaned``, ``features``, ``metrics``,
  ``quarantine``): the lineage labels a node by the last part of its key only, so
  ``cleaned/products``, ``features/products`` and ``metrics/products`` are all "products" there.
  Group boxes are labelled at every zoom level (a node's kind tag only when zoomed in), so
  groups per layer tell them apart at a glance; the dataset stays a tag (``dataset``) to filter
  the lineage by.
- ``preview_rows``: the IO manager adds a small table preview to materializations of
  ``cleaned/``, ``metrics/`` and ``quarantine/`` (``warehouse.preview``).
- code references to each asset's definition, linked to the git remote when the checkout has
  a GitHub or GitLab one.
"""

from __future__ import annotations

import inspect
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import dagster as dg
import pandera.pandas as pa

from ingest_assets.config import SourceConfig
from ingest_assets.datasets import Catalog, CompiledDataset
from ingest_assets.quality import schemas
from ingest_assets.transforms.raw import SYSTEM_COLUMNS as RAW_SYSTEM_COLUMNS
from ingest_assets.transforms.raw import column_name

DEFAULT_OWNER = "team:data-platform"
LAYERS = ("raw", "cleaned", "features", "metrics", "quarantine")
PREVIEW_LAYERS = ("cleaned", "metrics", "quarantine")
PREVIEW_ROWS = 5
COLUMN_SCHEMA = "dagster/column_schema"
REPO_ROOT = Path(__file__).resolve().parents[2]

_SHARED_SCHEMAS = {
    "ingestion": schemas.MetricsIngestion.to_schema(),
    "quarantine": schemas.QuarantineRecords.to_schema(),
    "history": schemas.QuarantineHistory.to_schema(),
}


def table_schema(key: dg.AssetKey, catalog: Catalog) -> pa.DataFrameSchema | None:
    """The Pandera schema of the table stored for an asset key (None: raw tables, unknown keys).

    Quarantine tables share one schema, whatever the second part of their key (``records``, or
    one per dataset), except ``quarantine/history``; so do ingestion metrics (``ingestion``, or
    ``ingestion_<dataset>``).
    """
    if len(key.path) != 2:
        return None
    layer, name = key.path
    if layer == "metrics" and (name == "ingestion" or name.startswith("ingestion_")):
        return _SHARED_SCHEMAS["ingestion"]
    if layer == "quarantine":
        return _SHARED_SCHEMAS["history" if name == "history" else "quarantine"]
    if layer in ("cleaned", "features", "metrics") and name in catalog:
        return catalog[name].schema(layer)
    return None


_TYPES = {
    "str": "text",
    "boolean": "boolean",
    "date": "date",
    "float64": "double",
    "Int64": "bigint",
    "int64": "bigint",
    "bool": "boolean",
    "datetime64[ns, UTC]": "timestamp (UTC)",
    "datetime64[ns]": "timestamp",
}


def _type_name(column_name_: str, dtype: Any) -> str:
    # partition_date is a DATE in both warehouses; pandas only has a datetime for it.
    if column_name_ == "partition_date":
        return "date"
    return _TYPES.get(str(dtype), str(dtype))


_CHECK_TEXT = {
    "greater_than": "> {min_value}",
    "greater_than_or_equal_to": ">= {min_value}",
    "less_than": "< {max_value}",
    "less_than_or_equal_to": "<= {max_value}",
    "in_range": "between {min_value} and {max_value}",
    "equal_to": "= {value}",
}


def check_text(check: pa.Check) -> str:
    """A column check in a few words: ``> 0``, ``one of low, medium, high``, ``non-empty``."""
    stats = check.statistics or {}
    if check.name in _CHECK_TEXT:
        return _CHECK_TEXT[check.name].format(**stats)
    if check.name == "isin":
        return "one of " + ", ".join(str(v) for v in stats.get("allowed_values", []))
    if check.name == "str_length" and stats.get("max_value") is None:
        return "non-empty" if stats.get("min_value") == 1 else f"length >= {stats['min_value']}"
    return check.error or check.name


def model_table_schema(schema: pa.DataFrameSchema) -> dg.TableSchema:
    """A Pandera schema as the ``TableSchema`` the UI shows as the asset's Columns."""
    unique = list(schema.unique or [])
    columns = [
        dg.TableColumn(
            name=name,
            type=_type_name(name, column.dtype),
            description=column.description,
            constraints=dg.TableColumnConstraints(
                nullable=column.nullable,
                unique=column.unique or unique == [name],
                other=[check_text(check) for check in column.checks],
            ),
        )
        for name, column in schema.columns.items()
    ]
    table_rules = [f"unique ({', '.join(unique)})"] if len(unique) > 1 else []
    table_rules += [check.name for check in schema.checks]
    return dg.TableSchema(columns=columns, constraints=dg.TableConstraints(other=table_rules))


# What the raw table's system columns (``transforms.raw.SYSTEM_COLUMNS``) hold.
_RAW_SYSTEM = {
    "partition_date": ("date", "The day (UTC) the record was fetched for."),
    "_run_id": ("text", "The Dagster run that fetched it."),
    "_ingested_at": ("timestamp (UTC)", "When the run fetched it."),
    "_record": ("json", "The record exactly as fetched (what validation and replay read)."),
    "_seq": (
        "bigint",
        "Arrival order within the day: which of two records with one key came first.",
    ),
    "_parse_error": ("text", "Why the record could not be stored as fetched; null when it could."),
    "_source_ref": (
        "text",
        "Where it came from: <archive object>#<index in the page>, or #L<line> of a file "
        "(python -m ingest_assets ref shows those bytes).",
    ),
}


_RAW_REQUIRED = ("partition_date", "_run_id", "_ingested_at", "_record", "_seq")


def _raw_system_column(name: str) -> dg.TableColumn:
    kind, description = _RAW_SYSTEM.get(name, ("text", "Added by the raw stage."))
    return dg.TableColumn(
        name,
        kind,
        description,
        dg.TableColumnConstraints(nullable=name not in _RAW_REQUIRED),
    )


def raw_table_schema(source: SourceConfig, dataset: CompiledDataset) -> dg.TableSchema:
    """What is known of ``raw/<source>`` before any fetch: system columns and declared fields.

    Field columns hold text as fetched (typing is validation's job); the declared type says what
    a value must parse as. A column is ``column_name`` of its field (source name → column, the
    same on every run); each description names its field exactly as the source sends it.
    """
    if source.fields is not None:
        fields = dict(source.fields)
        origin = "declared in sources.yaml"
    else:
        fields = {
            source.mapping.get(name, name).split(".", 1)[0]: "any" for name in dataset.field_names
        }
        origin = "read by the mapping (no fields: declared)"
    targets = {field.split(".", 1)[0]: target for target, field in source.mapping.items()}
    field_columns = []
    for field, declared in fields.items():
        description = f"Field {field!r} as fetched, {declared} ({origin})"
        if column_name(field) != field:
            description += "; the column's name is derived from the field's (see _record)"
        if field in targets:
            description += f"; becomes {targets[field]} in cleaned/{source.dataset}"
        field_columns.append(dg.TableColumn(column_name(field), "text", description + "."))
    system = [_raw_system_column(name) for name in RAW_SYSTEM_COLUMNS]
    first = [c for c in system if c.name == "partition_date"]
    rest = [c for c in system if c.name != "partition_date"]
    return dg.TableSchema(columns=[*first, *field_columns, *rest])


def _sources_of(
    key: dg.AssetKey, sources: Sequence[SourceConfig], catalog: Catalog
) -> list[SourceConfig]:
    """The sources an asset's rows come from, read from its key: ``raw/<source>``,
    ``<layer>/<dataset>`` or ``metrics/ingestion_<dataset>``; any other key, all of them."""
    layer, name = key.path[0], key.path[-1]
    if layer == "raw":
        return [s for s in sources if s.name == name]
    for candidate in (name, name.removeprefix("ingestion_")):
        if candidate in catalog:
            return [s for s in sources if s.dataset == candidate]
    return list(sources)


def owners_of(key: dg.AssetKey, sources: Sequence[SourceConfig], catalog: Catalog) -> list[str]:
    owners = dict.fromkeys(o for s in _sources_of(key, sources, catalog) for o in s.owners)
    return list(owners) or [DEFAULT_OWNER]


def column_schema(
    key: dg.AssetKey, sources: Sequence[SourceConfig], catalog: Catalog
) -> dg.TableSchema | None:
    if key.path[0] == "raw":
        found = _sources_of(key, sources, catalog)
        return raw_table_schema(found[0], catalog[found[0].dataset]) if found else None
    schema = table_schema(key, catalog)
    return model_table_schema(schema) if schema is not None else None


def spec_with_ui_metadata(
    spec: dg.AssetSpec, sources: Sequence[SourceConfig], catalog: Catalog
) -> dg.AssetSpec:
    """One asset's spec with its columns, owners, layer kind and preview opt-in."""
    layer = spec.key.path[0]
    metadata: dict[str, Any] = {}
    schema = column_schema(spec.key, sources, catalog)
    if schema is not None:
        metadata[COLUMN_SCHEMA] = schema
    if layer in PREVIEW_LAYERS:
        metadata["preview_rows"] = PREVIEW_ROWS
    if layer not in LAYERS:
        return spec.replace_attributes(
            metadata={**spec.metadata, **metadata}, owners=owners_of(spec.key, sources, catalog)
        )
    datasets = {s.dataset for s in _sources_of(spec.key, sources, catalog)}
    tags = {"dataset": datasets.pop()} if len(datasets) == 1 else {}
    return spec.replace_attributes(
        metadata={**spec.metadata, **metadata},
        owners=owners_of(spec.key, sources, catalog),
        kinds={*spec.kinds, layer},
        group_name=layer,
        tags={**spec.tags, **tags},
    )


def git_link_target(repo_root: Path = REPO_ROOT) -> tuple[str, str] | None:
    """(web URL of the ``origin`` remote, commit) when ``repo_root`` is a git checkout whose
    origin is on GitHub or GitLab (the platforms Dagster can link to); otherwise None.

    The commit, not the branch: a link then shows the code that was loaded, lines and all.
    """

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(repo_root), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if not top or Path(top).resolve() != repo_root.resolve():
        return None
    remote, commit = git("remote", "get-url", "origin"), git("rev-parse", "HEAD")
    if not remote or not commit:
        return None
    url = web_url(remote)
    if url is None or not ("github" in url or "gitlab" in url):
        return None
    return url, commit


def web_url(remote: str) -> str | None:
    """``git@github.com:acme/x.git`` or ``https://user:token@github.com/acme/x.git`` →
    ``https://github.com/acme/x`` (credentials never kept)."""
    remote = remote.strip().removesuffix("/").removesuffix(".git")
    if remote.startswith("git@") and ":" in remote:
        host, _, path = remote[len("git@") :].partition(":")
        return f"https://{host}/{path}"
    for scheme in ("https://", "http://", "ssh://"):
        if remote.startswith(scheme):
            rest = remote[len(scheme) :]
            host_part, _, path = rest.partition("/")
            host = host_part.rsplit("@", 1)[-1]
            if scheme == "ssh://":
                host = host.split(":", 1)[0]
            return f"https://{host}/{path}" if path else None
    return None


def definition_reference(assets_def: dg.AssetsDefinition) -> dg.LocalFileCodeReference | None:
    """The file and line of the function an asset runs.

    Dagster's ``with_source_code_references`` takes the file of the outermost wrapper (a timing
    decorator's module) but the line of the wrapped function; unwrapping first keeps file and
    line of the asset's own definition together.
    """
    compute_fn = getattr(assets_def.node_def, "compute_fn", None)
    fn = getattr(compute_fn, "decorated_fn", compute_fn)
    if fn is None:
        return None
    fn = inspect.unwrap(fn)
    try:
        path = inspect.getsourcefile(fn)
        line = inspect.getsourcelines(fn)[1]
    except (OSError, TypeError):
        return None
    return dg.LocalFileCodeReference(file_path=str(Path(path).resolve()), line_number=line)


def with_code_references(
    assets: Sequence[dg.AssetsDefinition], repo_root: Path = REPO_ROOT
) -> list[dg.AssetsDefinition]:
    """Each asset's definition (file and line) as a code reference, a git link when possible."""
    referenced = []
    for assets_def in assets:
        reference = definition_reference(assets_def)
        if reference is not None:
            value = dg.CodeReferencesMetadataValue(code_references=[reference])
            assets_def = assets_def.map_asset_specs(
                lambda spec, value=value: spec.replace_attributes(
                    metadata={**spec.metadata, "dagster/code_references": value}
                )
            )
        referenced.append(assets_def)
    target = git_link_target(repo_root)
    if target is None:
        return referenced
    url, commit = target
    return list(
        dg.link_code_references_to_git(  # type: ignore[arg-type]
            referenced,
            git_url=url,
            git_branch=commit,
            file_path_mapping=dg.AnchorBasedFilePathMapping(
                local_file_anchor=repo_root / "pyproject.toml",
                file_anchor_path_in_repository="pyproject.toml",
            ),
        )
    )


def with_ui_metadata(
    assets: Sequence[dg.AssetsDefinition],
    sources: Sequence[SourceConfig],
    catalog: Catalog,
    repo_root: Path = REPO_ROOT,
) -> list[dg.AssetsDefinition]:
    """Every asset with what the UI shows about it (see the module docstring)."""
    mapped = [
        a.map_asset_specs(lambda spec: spec_with_ui_metadata(spec, sources, catalog))
        for a in assets
    ]
    return with_code_references(mapped, repo_root)
