"""The landing directory: where raw files arrive, confined so no name can leave it."""

from __future__ import annotations

import errno
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import anyio

from app.domain.errors import LandingPathRefused, LandingPathTaken
from app.domain.params import check_relative_path

MAX_PATH_LENGTH = 1024
MAX_NAME_LENGTH = 255  # one file or folder name: what common file systems take
# The names `confined_path` accepts, as one regular expression for the API schema: segments of
# at most MAX_NAME_LENGTH characters joined by single slashes, none empty, none starting with '.',
# the first not starting with '~', no glob characters, backslashes or NUL bytes. A test keeps
# the two in agreement.
_REST = rf"[^/\\\x00*?\[\]]{{0,{MAX_NAME_LENGTH - 1}}}"
LANDING_PATH_PATTERN = rf"^[^/\\\x00*?\[\].~]{_REST}(?:/[^/\\\x00*?\[\].]{_REST})*$"


@dataclass(frozen=True)
class LandedFile:
    path: str
    size: int
    modified_at: datetime
    sha256: str | None = None
    """Known when the file was just written (hashed while it streamed in)."""


def confined_path(root: Path, relative: str) -> Path:
    """The absolute path of `relative` under `root`; refuse anything that would leave it."""
    if len(relative) > MAX_PATH_LENGTH:
        raise LandingPathRefused(relative[:80], "path is too long")
    try:
        rel = check_relative_path(relative)
    except ValueError as exc:
        raise LandingPathRefused(relative, str(exc)) from exc
    if any(part in ("", ".") for part in relative.split("/")):
        raise LandingPathRefused(relative, "path must not have empty or '.' segments")
    if any(len(part) > MAX_NAME_LENGTH for part in rel.parts):
        raise LandingPathRefused(relative[:80], f"a name is longer than {MAX_NAME_LENGTH}")
    if any(part.startswith(".") for part in rel.parts):
        raise LandingPathRefused(relative, "hidden names (starting with '.') are not allowed")
    if any(ch in relative for ch in "*?[]"):
        raise LandingPathRefused(relative, "a file name may not contain glob characters")
    root = root.resolve()
    target = (root / rel).resolve()
    if not target.is_relative_to(root) or target == root:
        raise LandingPathRefused(relative, "path leaves the landing directory")
    return target


def _prepare(root: Path, relative: str) -> tuple[Path, bool]:
    target = confined_path(root, relative)
    target.parent.mkdir(parents=True, exist_ok=True)
    # the parent may be a symlink made after the check: resolve again before writing
    if not target.parent.resolve().is_relative_to(root.resolve()):
        raise LandingPathRefused(relative, "path leaves the landing directory")
    if target.is_dir():
        raise LandingPathTaken(relative, "a folder of this name exists")
    return target, target.exists()


def _landed(relative: str, path: Path) -> LandedFile:
    stat = path.stat()
    return LandedFile(relative, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))


async def write_stream(
    root: Path, relative: str, chunks: AsyncIterator[bytes], max_bytes: int
) -> tuple[LandedFile, bool]:
    """Stream `chunks` into the landing file atomically; returns (file, created)."""
    try:
        target, existed = await anyio.to_thread.run_sync(_prepare, root, relative)
    except (FileExistsError, NotADirectoryError) as exc:
        raise LandingPathTaken(relative, "a file is where a folder of this path would be") from exc
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        # a name within MAX_NAME_LENGTH characters may still pass the file system's byte limit
        raise LandingPathRefused(relative[:80], "a name is too long for the file system") from exc
    temp = anyio.Path(target.parent / f".upload-{uuid.uuid4().hex}")
    written = 0
    digest = hashlib.sha256()
    try:
        async with await anyio.open_file(temp, "wb") as out:
            async for chunk in chunks:
                written += len(chunk)
                if written > max_bytes:
                    raise UploadTooLarge(max_bytes)
                digest.update(chunk)
                await out.write(chunk)
        await anyio.to_thread.run_sync(os.replace, temp, target)
    finally:
        await temp.unlink(missing_ok=True)
    landed = await anyio.to_thread.run_sync(_landed, relative, target)
    return replace(landed, sha256=digest.hexdigest()), not existed


class UploadTooLarge(Exception):
    def __init__(self, max_bytes: int) -> None:
        super().__init__(f"upload exceeds the limit of {max_bytes} bytes")
        self.max_bytes = max_bytes


def list_files(root: Path, prefix: str | None = None) -> list[LandedFile]:
    root = root.resolve()
    if not root.is_dir():
        return []
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if prefix and not rel.startswith(prefix):
                continue
            try:
                files.append(_landed(rel, full))
            except OSError:
                continue
    return files
