"""Files that are never half-written: atomic writes and the clean-up of what a killed writer left.

Every file the project writes (checkpoints, run records, tables, executed
notebooks) goes through :func:`write_atomic`: the bytes go to a hidden
temporary file beside the target, are flushed to disk, and replace the
target in one ``os.replace``. A reader sees the old file or the new one,
never a mix; a writer that fails removes its temporary file, and one that is
killed leaves a ``.<name>.tmp<pid>`` that :func:`remove_stale_temporaries`
deletes once that process is gone.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

_TMP = re.compile(r"^\..+\.tmp(\d+)$")


def write_atomic(path: str | os.PathLike, data: str | bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``; no temporary file survives an error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None:  # a failed write names no file: name the one that was being written
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Pretty, key-sorted JSON written atomically (values that JSON lacks are written as ``str``)."""
    write_atomic(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files of writers that no longer run (``.<name>.tmp<pid>``) in ``folder``.

    A temporary file of a live process (another writer at work) is left alone.
    Returns what was removed.
    """
    folder = Path(folder)
    removed = []
    if not folder.is_dir():
        return removed
    for p in folder.iterdir():
        m = _TMP.match(p.name)
        if m and p.is_file() and not _alive(int(m.group(1))):
            p.unlink(missing_ok=True)
            removed.append(p)
    return removed
