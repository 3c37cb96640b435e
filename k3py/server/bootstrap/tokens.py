"""The server's join token: a shared secret agents and bearer-token clients present.

Given with ``--token`` it is used as is; otherwise one is generated on first start and kept in
``<data-dir>/token`` (mode 0600) so later starts and joining agents see the same value.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from k3py.util.private import write_private


def load_or_create_token(data_dir: Path, given: str = "") -> str:
    path = data_dir / "token"
    if given:
        token = given
    elif path.exists():
        token = path.read_text().strip()
    else:
        token = secrets.token_hex(24)
    if not path.exists() or path.read_text().strip() != token:
        write_private(path, (token + "\n").encode())
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)  # left readable by an older k3py
    return token
