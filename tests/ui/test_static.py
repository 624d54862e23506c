"""The dashboard's files over plain HTTP (no browser): served by the app, self-contained, and
kept out of the OpenAPI schema. Runs in the ordinary suite."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tests.service import running_service, service_settings

STATIC = Path(__file__).resolve().parents[2] / "app" / "ui" / "static"
IMPORT = re.compile(r'^import [^;]*? from "\./([\w-]+\.js)";', re.M | re.S)
EXTERNAL_URL = re.compile(r"(?:https?:)?//(?!www\.w3\.org/2000/svg)[\w.-]+\.[a-z]{2,}", re.I)


async def test_the_dashboard_is_served_self_contained_and_not_in_the_schema(
    tmp_path: Path, sqlite_databases: Any,
) -> None:
    settings = service_settings(sqlite_databases.new(tmp_path), tmp_path)
    async with running_service(settings) as api:
        page = await api.get("/ui")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert not EXTERNAL_URL.search(page.text)
        assert (await api.get("/ui/jobs/some-job-id")).text == page.text
        slash = await api.get("/ui/")
        assert slash.status_code == 308 and slash.headers["location"] == "/ui"

        kinds = {".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml"}
        files = sorted(p for p in STATIC.iterdir() if p.name != "index.html")
        assert {"app.js", "style.css", "favicon.svg"} <= {p.name for p in files}
        for path in files:
            name, kind = path.name, kinds[path.suffix]
            asset = await api.get(f"/ui/static/{name}")
            assert asset.status_code == 200, name
            assert asset.headers["content-type"].startswith(kind)
            assert not EXTERNAL_URL.search(asset.text), f"{name} names an outside URL"
            for module in IMPORT.findall(asset.text):
                assert (STATIC / module).is_file(), f"{name} imports a missing {module}"
        assert '<script type="module" src="/ui/static/app.js">' in page.text

        for missing in ("index.htm", "..%2Fmain.py", "..%2F..%2Fpyproject.toml"):
            response = await api.get(f"/ui/static/{missing}")
            assert response.status_code == 404
            assert response.headers["content-type"].startswith("application/problem+json")

        schema = (await api.get("/openapi.json")).json()
        assert [p for p in schema["paths"] if p.startswith("/ui")] == []
