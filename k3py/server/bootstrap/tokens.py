"""The server's join token: a shared secret agents and bearer-token clients present.

Given with ``--token`` it is used as is; otherwise one is generated on first start and kept in
``<data-dir>/token`` (mode 0600) so later starts and joining agents see the same value.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def load_or_create_token(data_dir: Path, given: str = "") -> str:
    path = data_dir / "token"
    if given:
        token = given
    elif path.exists():
        token = path.read_text().strip()
    else:
        token = secrets.token_hex(24)
    if not path.exists() or path.read_text().strip() != token:
        data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(token + "\n")
    return token
