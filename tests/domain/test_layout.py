"""The warehouse layout: where a job's layers, rejects and scratch folders live."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.domain import layout

WAREHOUSE = Path("/data/warehouse")


def test_every_folder_of_a_job_lives_under_its_job_folder() -> None:
    job = layout.job_dir(WAREHOUSE, "job-1")

    assert job == WAREHOUSE / "job-1"
    assert layout.layer_dir(WAREHOUSE, "job-1", "ods") == job / "ods"
    assert layout.rejects_dir(WAREHOUSE, "job-1", "ods") == job / "ods_rejects"
    assert layout.work_dir(WAREHOUSE, "job-1", "ods", "ab12") == job / ".tmp-ods-ab12"


def test_a_scratch_folder_is_hidden_and_never_mistaken_for_a_layer() -> None:
    scratch = layout.work_dir(WAREHOUSE, "job-1", "ds", "t")

    assert scratch.name.startswith(layout.TMP_PREFIX) and scratch.name.startswith(".")
    assert scratch != layout.layer_dir(WAREHOUSE, "job-1", "ds")


@pytest.mark.parametrize(
    "job_id", ["job-1", "0b5c6f3e-1d2a-4c8e-9f00-123456789abc", "a.b_c-d", "x" * 128]
)
def test_ids_that_name_one_folder_are_safe(job_id: str) -> None:
    assert layout.is_safe_job_id(job_id)


@pytest.mark.parametrize(
    "job_id", ["", ".", "..", "../etc", "a/b", "a\\b", ".hidden", "-flag", "x" * 129, "a b",
               "job\n1", "job-1\n"],
)
def test_ids_that_could_leave_the_warehouse_are_not_safe(job_id: str) -> None:
    assert not layout.is_safe_job_id(job_id)
