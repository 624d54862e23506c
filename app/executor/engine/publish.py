"""Moving a finished stage's folders into place, so a reader never sees half a layer.

A stage writes into its own scratch folder (`layout.work_dir`). When everything succeeded its
`out/` becomes the layer folder and its `rejects/` the rejects folder. A layer folder that is
already there is swapped with the new one atomically (`renameat2(RENAME_EXCHANGE)` on Linux), so
at every moment the layer path names a complete layer, the old one or the new one; the old one is
deleted afterwards. Where the kernel cannot exchange two paths (not Linux, or a file system
without it) the fallback is two renames, which leaves a moment without the folder.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths (Linux renameat2); False where that is not available."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if result == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish(src: Path, dest: Path, work: Path) -> None:
    """Move the finished folder `src` to `dest`, replacing what was there (removed afterwards).

    `work` is the stage's scratch folder, on the same file system: the fallback parks the old
    folder there.
    """
    if not dest.exists() and not dest.is_symlink():
        os.rename(src, dest)
        return
    if exchange(src, dest):
        shutil.rmtree(src, ignore_errors=True)  # src now holds the old folder
        return
    old = work / f"old-{dest.name}"
    os.rename(dest, old)
    os.rename(src, dest)
    shutil.rmtree(old, ignore_errors=True)


def publish_stage(
    *,
    work: Path,
    out: Path,
    layer_dir: Path,
    rejects_out: Path | None,
    rejects_dir: Path,
    name_parts: Callable[[Path], int],
) -> int:
    """Publish a stage's rejects (or remove stale ones), then its layer; returns its file count.

    `rejects_out` is None for a layer without checks: a re-run must not leave the rejects of an
    earlier run that had checks. `name_parts` renames an engine's files to `part-NNNNN.parquet`.
    """
    if rejects_out is not None:
        name_parts(rejects_out)
        publish(rejects_out, rejects_dir, work)
    else:
        shutil.rmtree(rejects_dir, ignore_errors=True)
    files = name_parts(out)
    publish(out, layer_dir, work)
    return files


def part_name(index: int) -> str:
    """The name of a layer's index-th data file; name order is row order where it matters."""
    return f"part-{index:05d}.parquet"
