"""The product's sample job (examples/orders_job.json) on a dirty orders landing zone.

All four stages run with the DuckDB engine; DS is checked against an independent computation of
the layer rules in plain Python (typing, latest-event-wins dedupe, checks in order, the DWS
group-by, DS paid/shipped sums, average order value and the 7-day rolling revenue per region),
together with the row-count identities between the layers.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.domain.params import JobParams
from app.domain.states import Stage
from app.executor.engine.base import LayerResult
from app.store.layers import count_rows, iter_rows
from tests import orders_data
from tests.executor.engine.stages import StageRunner, read_layer

EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "orders_job.json"
ROWS, FILES, SEED = 3000, 4, 7
DIRT = orders_data.Dirt().scaled(5)  # so that a small sample holds every kind of dirt
FX = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27}
CHECKS = ("bad_event_ts", "bad_quantity", "non_positive_quantity", "bad_unit_price")

ISO_TS = re.compile(r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z$")
INTEGER = re.compile(r"^[+-]?\d+$")
PRICE = re.compile(r"^\d+\.\d{2}$")


@dataclass
class Run:
    landing: list[dict[str, Any]]
    """Generated rows with the lineage the ODS must give them."""
    results: dict[str, LayerResult]
    runner: StageRunner


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    root = tmp_path_factory.mktemp("orders")
    runner = StageRunner((root / "landing").resolve(), (root / "warehouse").resolve())
    runner.warehouse.mkdir()
    rows = orders_data.generate(ROWS, SEED, DIRT)
    orders_data.write_csv(rows, runner.landing / "orders", FILES)
    landing = []
    for index, part in enumerate(orders_data.file_slices(rows, FILES), start=1):
        for number, row in enumerate(part, start=1):
            source = f"orders/orders_{index:04d}.csv"
            landing.append({**row, "_source_file": source, "_row_number": number})
    params = JobParams.model_validate(json.loads(EXAMPLE.read_text())["params"])
    results = {stage.layer: runner.run(params, stage, "orders-daily") for stage in Stage}
    return Run(landing, results, runner)


# -- the layer rules, in plain Python -------------------------------------------------------------


def typed(row: dict[str, Any]) -> dict[str, Any]:
    match = ISO_TS.match(row["event_ts"] or "")
    ts = None
    if match:
        try:
            ts = dt.datetime(*map(int, match.groups()))
        except ValueError:  # month 13, hour 25
            ts = None
    qty = row["quantity"]
    qty = int(qty) if qty is not None and INTEGER.match(str(qty)) else None
    price = row["unit_price"]
    price = decimal.Decimal(price) if price is not None and PRICE.match(price) else None
    return {**row, "ts": ts, "qty": qty, "price": price, "fx": FX.get(row["currency"])}


def latest_per_order(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """ts DESC NULLS LAST, _source_file, _row_number: the first row per order_id."""

    def order(row: dict[str, Any]) -> tuple[Any, ...]:
        ts = row["ts"]
        return (ts is None, -ts.timestamp() if ts else 0.0, row["_source_file"], row["_row_number"])

    kept: dict[str, dict[str, Any]] = {}
    for row in rows:
        best = kept.get(row["order_id"])
        if best is None or order(row) < order(best):
            kept[row["order_id"]] = row
    return kept


def reject_reason(row: dict[str, Any]) -> str | None:
    if row["ts"] is None:
        return "bad_event_ts"
    if row["qty"] is None:
        return "bad_quantity"
    if row["qty"] <= 0:
        return "non_positive_quantity"
    if row["price"] is None:
        return "bad_unit_price"
    if row["fx"] is None:
        return "unknown_currency"
    return None


def expected_layers(landing: list[dict[str, Any]]) -> dict[str, Any]:
    kept = latest_per_order([typed(r) for r in landing])
    reasons = {oid: reject_reason(r) for oid, r in kept.items()}
    dwd = [r for oid, r in kept.items() if reasons[oid] is None]

    dws: dict[tuple[dt.date, str, str], dict[str, Any]] = defaultdict(
        lambda: {"order_count": 0, "units": 0, "revenue_usd": 0.0, "customers": set()}
    )
    for r in dwd:
        group = dws[(r["ts"].date(), r["region"].strip(" ").lower(), r["status"])]
        group["order_count"] += 1
        group["units"] += r["qty"]
        group["revenue_usd"] += r["qty"] * float(r["price"]) * r["fx"]
        group["customers"].add(r["customer_id"])

    daily: dict[tuple[dt.date, str], list[float]] = {}
    for (day, region, status), g in dws.items():
        counts = daily.setdefault((day, region), [0, 0.0])
        if status in ("paid", "shipped"):
            counts[0] += g["order_count"]
            counts[1] += g["revenue_usd"]
    ds = []
    for day, region in sorted(daily):
        order_count, revenue = daily[(day, region)]
        window = [
            daily[(d, region)][1]
            for d in (day - dt.timedelta(days=k) for k in range(7))
            if (d, region) in daily
        ]
        ds.append(
            {
                "event_date": day,
                "region": region,
                "order_count": order_count,
                "revenue_usd": revenue,
                "avg_order_value_usd": revenue / order_count if order_count else None,
                "revenue_7d_usd": sum(window),
            }
        )
    return {
        "distinct_orders": len(kept),
        "dwd": {r["order_id"]: (r["_source_file"], r["_row_number"]) for r in dwd},
        "reasons": Counter(reason for reason in reasons.values() if reason),
        "dws": {key: {**g, "customers": len(g["customers"])} for key, g in dws.items()},
        "ds": ds,
    }


@pytest.fixture(scope="module")
def expected(run: Run) -> dict[str, Any]:
    return expected_layers(run.landing)


def close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


# -- the checks ---------------------------------------------------------------------------------


def test_the_sample_dataset_holds_every_kind_of_dirt(expected: dict[str, Any]) -> None:
    assert set(expected["reasons"]) == set(CHECKS)
    assert expected["distinct_orders"] < ROWS


def test_ods_is_every_landing_row_as_landed(run: Run) -> None:
    assert (
        run.results["ods"].rows == ROWS == count_rows(run.runner.layer_dir("ods", "orders-daily"))
    )
    stored = {
        (r["_source_file"], r["_row_number"]): r
        for r in read_layer(run.runner.layer_dir("ods", "orders-daily")).to_pylist()
    }
    for row in run.landing:
        got = stored[(row["_source_file"], row["_row_number"])]
        for column in orders_data.COLUMNS:
            value = row[column]
            assert got[column] == (None if value is None else str(value)), (column, row)


def test_dwd_plus_rejects_plus_deduped_is_ods(run: Run, expected: dict[str, Any]) -> None:
    dwd = run.results["dwd"]
    assert dwd.rows + dwd.rejects + dwd.deduped == run.results["ods"].rows
    assert dwd.deduped == ROWS - expected["distinct_orders"]
    assert dwd.rows == len(expected["dwd"])
    rejects = read_layer(Path(str(dwd.rejects_path))).column("_reject_reason").to_pylist()
    assert Counter(rejects) == expected["reasons"]
    kept = read_layer(Path(dwd.path)).select(["order_id", "_source_file", "_row_number"])
    assert {r["order_id"]: (r["_source_file"], r["_row_number"]) for r in kept.to_pylist()} == (
        expected["dwd"]
    )


def test_dws_groups_dwd_by_day_region_and_status(run: Run, expected: dict[str, Any]) -> None:
    stored = read_layer(Path(run.results["dws"].path)).to_pylist()
    assert len(stored) == run.results["dws"].rows == len(expected["dws"])
    for row in stored:
        want = expected["dws"][(row["event_date"], row["region"], row["status"])]
        assert row["order_count"] == want["order_count"]
        assert row["units"] == want["units"]
        assert row["distinct_customers"] == want["customers"]
        assert close(row["revenue_usd"], want["revenue_usd"])


def test_ds_equals_the_independent_computation_in_order(run: Run, expected: dict[str, Any]) -> None:
    stored = read_layer(Path(run.results["ds"].path)).to_pylist()
    assert run.results["ds"].rows == len(stored) == len(expected["ds"])
    assert run.results["ds"].files == 1
    for got, want in zip(stored, expected["ds"], strict=True):
        assert (got["event_date"], got["region"], got["order_count"]) == (
            want["event_date"],
            want["region"],
            want["order_count"],
        )
        for column in ("revenue_usd", "avg_order_value_usd", "revenue_7d_usd"):
            assert close(got[column], want[column]), (column, got, want)


def test_the_data_service_pages_ds_in_its_order(run: Run, expected: dict[str, Any]) -> None:
    path = Path(run.results["ds"].path)
    page = json.loads(b"".join(iter_rows(path, "json", 25, 100)))
    want = expected["ds"][100:125]
    assert [(r["event_date"], r["region"]) for r in page] == [
        (w["event_date"].isoformat(), w["region"]) for w in want
    ]
