"""The Dockerfile, checked where no container engine runs: `make test` lints it with hadolint,
and these tests read it and replay its steps outside a container — every file it copies exists,
its build steps install Strata from exactly those files, and its entrypoint, commands and
healthcheck start a service that answers."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name} has no {keyword}"
        return found[-1]


def parse(text: str) -> list[Stage]:
    """The Dockerfile's stages and their (KEYWORD, arguments), continuation lines joined."""
    stages: list[Stage] = []
    logical = ""
    for line in text.splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        keyword, _, args = logical.strip().partition(" ")
        logical = ""
        if keyword.upper() == "FROM":
            words = args.split()
            stages.append(Stage(words[-1] if len(words) > 2 else words[0]))
        else:
            stages[-1].instructions.append((keyword.upper(), args.strip()))
    return stages


def env_of(args: str) -> dict[str, str]:
    return dict(item.split("=", 1) for item in shlex.split(args))


def exec_form(args: str) -> list[str]:
    form = json.loads(args)
    assert isinstance(form, list), "use the exec (JSON) form"
    return [str(a) for a in form]


STAGES = parse(DOCKERFILE.read_text())
BUILD, RUNTIME = STAGES[0], STAGES[-1]


def test_every_file_the_dockerfile_copies_exists() -> None:
    copies = [args for stage in STAGES for args in stage.all("COPY") if "--from" not in args]
    assert copies
    for args in copies:
        *sources, _ = shlex.split(args)
        for source in sources:
            assert (ROOT / source).exists(), f"COPY {source}: not in the repository"


def test_the_image_serves_as_the_readme_and_compose_say() -> None:
    env = env_of(" ".join(RUNTIME.all("ENV")))
    assert env["STRATA_HOST"] == "0.0.0.0" and env["STRATA_PORT"] == "8000"
    assert RUNTIME.last("EXPOSE") == env["STRATA_PORT"]
    assert exec_form(RUNTIME.last("CMD")) == ["serve"]
    assert RUNTIME.last("USER").split(":")[0] != "0"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_dockerfile_steps_build_and_run_strata_outside_a_container(
    tmp_path: Path,
) -> None:
    """The build stage's COPY and RUN steps, then the runtime's ENV, ENTRYPOINT and CMD, with
    `/opt/strata` and `/data` moved under a temporary folder (and the user's creation left out)."""
    opt, data, src = tmp_path / "opt" / "strata", tmp_path / "data", tmp_path / "src"
    moved = {"/opt/strata": str(opt), "/data": str(data)}

    def relocate(text: str) -> str:
        for inside, outside in moved.items():
            text = text.replace(inside, outside)
        return text

    # build: copy exactly what the Dockerfile copies, run its RUN steps there
    assert BUILD.last("WORKDIR") == "/src"
    src.mkdir()
    for args in BUILD.all("COPY"):
        *sources, dest = shlex.split(args)
        for source in sources:
            target = src / dest if dest not in ("./", ".") else src / Path(source).name
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target,
                                ignore=shutil.ignore_patterns("__pycache__"))
            else:
                shutil.copy2(ROOT / source, target)
    build_env = {**os.environ, **env_of(" ".join(BUILD.all("ENV")))}
    build_env.pop("VIRTUAL_ENV", None)
    for step in BUILD.all("RUN"):
        command = relocate(step).replace("python -m venv", f"{sys.executable} -m venv")
        subprocess.run(["/bin/sh", "-c", command], cwd=src, env=build_env, check=True,
                       capture_output=True, timeout=500)
    assert (opt / "bin" / "strata").exists()

    # runtime: its ENV (loopback instead of 0.0.0.0 on a shared machine), its folders, its
    # entrypoint with each command the project runs (compose's executor, the image's serve)
    data.mkdir()
    run_env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    run_env.pop("VIRTUAL_ENV", None)
    for key, value in env_of(" ".join(RUNTIME.all("ENV"))).items():
        run_env[key] = relocate(value).replace("$PATH", os.environ["PATH"])
    run_env["STRATA_HOST"] = "127.0.0.1"
    for command in (exec_form(RUNTIME.last("CMD")), ["executor"]):
        run_env["STRATA_PORT"] = str(free_port())
        entry = [*exec_form(RUNTIME.last("ENTRYPOINT")), *command]
        log = tmp_path / f"{command[0]}.log"
        with log.open("wb") as output:
            proc = subprocess.Popen(entry, cwd=data, env=run_env, stdout=output,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_healthy(proc, run_env["STRATA_PORT"], log)
            check = exec_form(RUNTIME.last("HEALTHCHECK").split(" CMD ", 1)[1])
            probe = subprocess.run(check, env=run_env, timeout=30,
                                   check=False, capture_output=True, text=True)
            assert probe.returncode == 0, probe.stderr
        finally:
            proc.terminate()
            proc.wait(30)
    assert (data / "strata.db").exists()  # the entrypoint migrated the image's database


def _wait_healthy(proc: subprocess.Popen[bytes], port: str, log: Path) -> None:
    """Poll /healthz until it answers 200, the process exits, or a minute passes."""
    deadline = time.monotonic() + 60
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "the image's command did not answer within 60 s"
        time.sleep(0.1)
