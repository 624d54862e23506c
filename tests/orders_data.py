"""A small, deterministic, dirty landing zone of e-commerce order events (pure Python).

The same columns and kinds of dirt as the reference generator of the orders dataset, sized for
tests (a few thousand rows): exact duplicate rows, re-sent orders (same order, a later event and
the next status), malformed `event_ts`, negative or empty `quantity`, non-numeric `unit_price` and
dirty `region`. The dirt rates can be raised (`dirt=`) so that a small sample holds every kind.

    rows = generate(3000, seed=7)
    paths = write_csv(rows, landing / "orders", files=4)

CSV like the reference: a header row, comma separated, every string value double-quoted, the
quantity unquoted, an empty unquoted field for a missing value; rows in event-time order (each
file a time slice; a malformed timestamp sits where its true time would be, an exact duplicate
next to its original).
"""

from __future__ import annotations

import datetime as dt
import math
import random
from dataclasses import dataclass
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
"""The product's sample jobs (`examples/orders_job.json` runs on this data)."""

COLUMNS = (
    "order_id",
    "event_ts",
    "customer_id",
    "region",
    "product_sku",
    "quantity",
    "unit_price",
    "currency",
    "status",
)
REGIONS = ("north", "south", "east", "west", "central", "northeast", "southwest", "pacific")
REGION_WEIGHTS = (0.16, 0.14, 0.15, 0.15, 0.12, 0.10, 0.10, 0.08)
STATUSES = ("created", "paid", "shipped", "cancelled", "refunded")
STATUS_WEIGHTS = (0.10, 0.40, 0.35, 0.10, 0.05)
NEXT_STATUS = {"created": "paid", "paid": "shipped", "shipped": "refunded"}
CURRENCIES = ("USD", "EUR", "GBP")
CURRENCY_WEIGHTS = (0.90, 0.06, 0.04)
FX_TO_USD = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27}
START = dt.datetime(2024, 1, 1)
SPAN_SECONDS = 366 * 86400
SKUS = 500

Row = dict[str, str | int | None]


@dataclass(frozen=True)
class Dirt:
    """Share of events with each kind of dirt (the reference rates by default)."""

    event_ts: float = 0.002
    quantity: float = 0.003
    unit_price: float = 0.002
    region: float = 0.03

    def scaled(self, factor: float) -> Dirt:
        return Dirt(
            self.event_ts * factor,
            self.quantity * factor,
            self.unit_price * factor,
            min(1.0, self.region * factor),
        )


def generate(rows: int, seed: int = 42, dirt: Dirt | None = None) -> list[Row]:
    """`rows` landing rows (dicts keyed by COLUMNS; None = missing) in landing order."""
    dirt = dirt or Dirt()
    rng = random.Random(seed)
    n_dup, n_upd = rows // 100, rows // 200
    n_base = rows - n_dup - n_upd
    customers = max(1000, rows // 20)
    sku_weights = [1.0 / (rank**0.8) for rank in range(1, SKUS + 1)]
    sku_cents = [
        min(250_000, max(99, round(math.exp(rng.gauss(3.2, 0.9)) * 100))) for _ in range(SKUS)
    ]

    events: list[tuple[int, Row]] = []  # (true event second, row)
    for order in range(1, n_base + 1):
        second = rng.randrange(SPAN_SECONDS)
        currency = rng.choices(CURRENCIES, CURRENCY_WEIGHTS)[0]
        sku = rng.choices(range(SKUS), sku_weights)[0]
        cents = max(1, round(sku_cents[sku] / FX_TO_USD[currency]))
        events.append(
            (
                second,
                {
                    "order_id": f"ORD-{order:010d}",
                    "customer_id": f"C{rng.randint(1, customers):08d}",
                    "region": rng.choices(REGIONS, REGION_WEIGHTS)[0],
                    "product_sku": f"SKU-{sku + 1:05d}",
                    "quantity": min(20, _geometric(rng, 0.45)),
                    "unit_price": f"{cents // 100}.{cents % 100:02d}",
                    "currency": currency,
                    "status": rng.choices(STATUSES, STATUS_WEIGHTS)[0],
                },
            )
        )
    # re-sent orders: the same order later, with the next status
    candidates = [i for i, (_, row) in enumerate(events) if row["status"] in NEXT_STATUS]
    for index in sorted(rng.sample(candidates, n_upd)):
        second, row = events[index]
        status = str(row["status"])
        events.append(
            (second + rng.randrange(60, 3 * 86400), {**row, "status": NEXT_STATUS[status]})
        )

    for second, row in events:
        moment = START + dt.timedelta(seconds=second)
        row["event_ts"] = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
        if rng.random() < dirt.region:
            region = str(row["region"])
            row["region"] = rng.choice(
                [" " + region, region + "  ", region.upper(), region.capitalize()]
            )
        if rng.random() < dirt.event_ts:
            row["event_ts"] = rng.choice(
                [
                    moment.strftime("%Y-13-%dT%H:%M:%SZ"),
                    moment.strftime("%Y-%m-%dT25:%M:%SZ"),
                    moment.strftime("%d/%m/%Y %H:%M"),
                    None,
                ]
            )
        if rng.random() < dirt.quantity:
            row["quantity"] = -rng.randint(1, 5) if rng.random() < 0.5 else None
        if rng.random() < dirt.unit_price:
            price = str(row["unit_price"])
            row["unit_price"] = rng.choice(["N/A", "$" + price, price.replace(".", ","), None])

    # exact duplicates (re-deliveries), then landing order = event-time order (stable)
    for _ in range(n_dup):
        second, row = events[rng.randrange(len(events))]
        events.append((second, dict(row)))
    order = sorted(range(len(events)), key=lambda i: events[i][0])
    return [{column: events[i][1].get(column) for column in COLUMNS} for i in order]


def write_csv(rows: list[Row], folder: Path, files: int = 4) -> list[Path]:
    """Write `rows` as orders_0001.csv … in `files` equal parts; returns the paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    bounds = [round(i * len(rows) / files) for i in range(files + 1)]
    for part in range(files):
        path = folder / f"orders_{part + 1:04d}.csv"
        lines = [",".join(f'"{c}"' for c in COLUMNS)]
        for row in rows[bounds[part] : bounds[part + 1]]:
            lines.append(",".join(_field(row[c]) for c in COLUMNS))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        paths.append(path)
    return paths


def file_slices(rows: list[Row], files: int = 4) -> list[list[Row]]:
    """The rows of each file written by `write_csv`, in order."""
    bounds = [round(i * len(rows) / files) for i in range(files + 1)]
    return [rows[bounds[i] : bounds[i + 1]] for i in range(files)]


def _field(value: str | int | None) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    return '"' + value.replace('"', '""') + '"'


def _geometric(rng: random.Random, p: float) -> int:
    return 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - p))
