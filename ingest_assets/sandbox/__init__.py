"""A loopback HTTP sandbox imitating the DummyJSON products API and the Open-Meteo archive API.

Stdlib only, no Dagster import. Use it in-process::

    from ingest_assets.sandbox import Faults, Sandbox

    with Sandbox(port=0, faults=Faults(fail_first=1)) as sb:
        ...  # point DUMMYJSON_BASE_URL / OPEN_METEO_BASE_URL at sb.url

or as a process: ``python -m ingest_assets.sandbox --port 8765``.
"""

from ingest_assets.sandbox.server import Faults, Sandbox, load_products, weather_archive

__all__ = ["Faults", "Sandbox", "load_products", "weather_archive"]
