"""Private files and folders: what k3py keeps under its data dirs is for root's eyes only.

A data dir holds keys, the join token, the database and pod state, so it and every folder k3py
makes under it are 0700 and the files it writes there 0600, whatever the process umask says.
A data dir left 0755 by an older k3py is tightened at the next start. The parents of a data
dir (``/var/lib/k3py``) are made as ``mkdir -p`` makes them: they hold nothing secret.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """``path`` as a folder of mode 0700 (created with its parents, or tightened); returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        path.mkdir(mode=DIR_MODE)
    info = path.stat()
    # Only a folder this user owns is ours to tighten (a data dir on a shared mount that
    # belongs to someone else is the operator's decision), and never a shared sticky folder
    # such as /tmp given as a data dir by mistake.
    if info.st_mode & 0o777 != DIR_MODE and info.st_uid == os.geteuid() and not info.st_mode & stat.S_ISVTX:
        os.chmod(path, DIR_MODE)
    return path


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` (mode 0600) through a temporary file, so a reader never sees
    half a file and the content is never readable by others, not even for a moment."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, FILE_MODE)  # an existing temporary file kept its old mode through O_CREAT
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
