"""`make bench` kept from rotting: the generated sandbox catalogue, and the harness at a tiny scale.

No timing is asserted: only that the comparisons run, count the same records on both sides and
write ``bench.json`` in its documented shape.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ingest_assets.sandbox import Sandbox
from ingest_assets.sandbox.generated import GeneratedCatalogue
from ingest_assets_tests.pg import require_postgres

REPO = Path(__file__).resolve().parents[1]


def test_generated_catalogue_is_the_fixture_repeated_with_new_ids() -> None:
    catalogue = GeneratedCatalogue(500, seed=3)
    products = list(catalogue)
    assert [p["id"] for p in products] == list(range(1, 501))
    assert len({p["sku"] for p in products}) == 500
    # template 0 comes back every 194 records, with the fixture's text but its own values
    assert products[0]["title"] == products[194]["title"] == "Essence Mascara Lash Princess"
    assert products[0]["reviews"] == products[194]["reviews"]
    assert (products[0]["price"], products[0]["stock"]) != (
        products[194]["price"],
        products[194]["stock"],
    )
    assert all(p["price"] > 0 and 0 <= p["rating"] <= 5 for p in products)
    assert all(0 <= p["discountPercentage"] < 100 and 0 <= p["stock"] < 200 for p in products)


def test_generated_catalogue_depends_on_the_seed_only() -> None:
    one, same, other = (GeneratedCatalogue(300, seed=s) for s in (1, 1, 2))
    pages = b"".join(one.page_json(skip, 100) for skip in (0, 100, 200))
    assert pages == b"".join(same.page_json(skip, 100) for skip in (0, 100, 200))
    # page boundaries do not change a record
    assert json.loads(one.page_json(0, 300))["products"][150] == one[150]
    assert one[150]["price"] != other[150]["price"] or one[150]["stock"] != other[150]["stock"]


def test_sandbox_serves_a_generated_catalogue_in_dummyjson_shape() -> None:
    with (
        Sandbox(port=0, generated=2500, generated_seed=7) as sandbox,
        httpx.Client(base_url=sandbox.url, timeout=10) as client,
    ):
        body = client.get("/products", params={"limit": 1000, "skip": 2000}).json()
        assert (body["total"], body["skip"], body["limit"]) == (2500, 2000, 500)
        assert [p["id"] for p in body["products"]] == list(range(2001, 2501))
        default = client.get("/products").json()
        assert default["limit"] == 30 and default["products"][0]["id"] == 1
        one = client.get("/products/2500").json()
        assert one == body["products"][-1]
        assert client.get("/products/2501").status_code == 404
        selected = client.get("/products", params={"limit": 2, "select": "title"}).json()
        assert selected["products"] == [
            {"id": 1, "title": "Essence Mascara Lash Princess"},
            {"id": 2, "title": "Eyeshadow Palette with Mirror"},
        ]


@pytest.mark.slow
@pytest.mark.postgres
def test_bench_harness_writes_every_selected_comparison(tmp_path: Path) -> None:
    require_postgres()
    out = tmp_path / "bench.json"
    names = ["load_vs_psql_copy", "replace_vs_psql_copy", "load_vs_to_sql", "fetch_vs_threads"]
    env = {**os.environ, "BENCH_RECORDS": "2000", "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "run.py"), "--only", ",".join(names)]
        + ["--out", str(out)],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = json.loads(out.read_text())
    assert sorted(results) == sorted(names)
    for name, entry in results.items():
        assert "error" not in entry, (name, entry.get("error"))
        for key in ("ours", "baseline", "ratio"):
            assert isinstance(entry[key], int | float) and math.isfinite(entry[key]), (name, key)
            assert entry[key] > 0, (name, key)
        assert entry["unit"] in ("rows/s", "records/s")
        assert isinstance(entry["met"], bool)
    assert results["load_vs_to_sql"]["detail"]["rows"] == 500
    assert results["fetch_vs_threads"]["detail"]["pages"] == 10
    assert "load_vs_psql_copy" in done.stdout and "fetch_vs_threads" in done.stdout
