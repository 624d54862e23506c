"""Landing uploads are streamed into the landing directory and can never leave it."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.store import landing


async def test_put_creates_then_replaces_and_get_lists(api: httpx.AsyncClient,
                                                       tmp_path: Path) -> None:
    first = await api.put("/v1/landing/orders/a.csv", content=b"id\n1\n")
    assert first.status_code == 201 and first.json()["size"] == 5
    again = await api.put("/v1/landing/orders/a.csv", content=b"id\n1\n2\n")
    assert again.status_code == 200 and again.json()["size"] == 7
    await api.put("/v1/landing/b.csv", content=b"x\n")
    files = (await api.get("/v1/landing")).json()["files"]
    assert [(f["path"], f["size"]) for f in files] == [("b.csv", 2), ("orders/a.csv", 7)]
    assert (tmp_path / "landing" / "orders" / "a.csv").read_bytes() == b"id\n1\n2\n"
    only = (await api.get("/v1/landing", params={"prefix": "orders/"})).json()["files"]
    assert [f["path"] for f in only] == ["orders/a.csv"]


async def test_upload_is_streamed_in_chunks(api: httpx.AsyncClient, tmp_path: Path) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(64):
            yield f"{i}\n".encode() * 1000

    response = await api.put("/v1/landing/big.csv", content=chunks())
    assert response.status_code == 201
    expected = b"".join(f"{i}\n".encode() * 1000 for i in range(64))
    assert (tmp_path / "landing" / "big.csv").read_bytes() == expected


async def test_paths_that_leave_the_landing_directory_are_refused(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "landing" / "link").symlink_to(outside)
    for path in ("..%2Fescape.csv", "a/..%2F..%2Fescape.csv", "%2Fetc%2Fpasswd",
                 "link/escape.csv", ".hidden", "a/%00.csv", "x/*.csv"):
        response = await api.put(f"/v1/landing/{path}", content=b"no")
        assert response.status_code in (404, 422), (path, response.status_code)
        if response.status_code == 422:
            assert response.json()["errors"][0]["field"] == "path"
    too_long = await api.put(f"/v1/landing/{'é' * 200}.csv", content=b"no")
    assert too_long.status_code == 422 and "too long" in too_long.json()["detail"]
    for path in ("a//b.csv", "a/"):
        response = await api.put(f"/v1/landing/{path}", content=b"no")
        assert response.status_code == 422, path
        assert "empty or '.' segments" in response.json()["detail"]
    assert list(outside.iterdir()) == []
    assert not (tmp_path / "escape.csv").exists()


async def test_the_listing_walks_the_folder_off_the_event_loop(
    api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    loop_thread = threading.get_ident()
    walked_in: list[int] = []
    walk = landing.list_files

    def recording(root: Path, prefix: str | None = None) -> list[landing.LandedFile]:
        walked_in.append(threading.get_ident())
        return walk(root, prefix)

    monkeypatch.setattr(landing, "list_files", recording)
    await api.put("/v1/landing/a.csv", content=b"x\n")

    assert [f["path"] for f in (await api.get("/v1/landing")).json()["files"]] == ["a.csv"]
    assert walked_in and loop_thread not in walked_in


async def test_an_empty_upload_lands_an_empty_file(api: httpx.AsyncClient, tmp_path: Path) -> None:
    response = await api.put("/v1/landing/orders/_SUCCESS")
    assert response.status_code == 201 and response.json()["size"] == 0
    assert (tmp_path / "landing" / "orders" / "_SUCCESS").read_bytes() == b""


async def test_a_file_and_a_folder_cannot_share_a_name(api: httpx.AsyncClient) -> None:
    assert (await api.put("/v1/landing/day/a.csv", content=b"x\n")).status_code == 201
    assert (await api.put("/v1/landing/top.csv", content=b"x\n")).status_code == 201
    for path in ("day", "top.csv/b.csv"):
        response = await api.put(f"/v1/landing/{path}", content=b"y\n")
        assert response.status_code == 409, (path, response.text)
        assert response.json()["errors"][0]["field"] == "path"
