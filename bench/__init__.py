"""Strata's benchmarks, side by side with hand-written baselines (`make bench`, not `make test`).

    python -m bench                      # all five, medians of 3 runs, writes docs/benchmarks.md
    python -m bench --quick              # small sizes, one run: a few minutes
    python -m bench --only hop,api       # some of them; merged into the last results

Modules: `data_path` (the orders job through a real `strata serve` next to `ref_duckdb.py` and
`ref_polars.py`), `stage_hop` (task finished → next task created, on PostgreSQL), `throughput`
(1,000 tiny jobs at once; DB statements per watcher tick), `api` (requests/s and latency of the
job GET and POST next to /healthz, from a separate load-generating process), `incremental`
(day 31 of a pipeline table grown one day's file at a time, next to rebuilding it), `loadgen`
(that process), `report` (docs/benchmarks.md), `common` (processes, /proc readings, statistics).
Data lives under `BENCH_DIR` (default `data/bench`, git-ignored); the baselines are taken from
`REFDATA` (default `../shared/refdata` relative to the repository).
"""
