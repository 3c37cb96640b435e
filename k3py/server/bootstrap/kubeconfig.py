"""The admin kubeconfig: cluster CA, server URL and the admin client certificate, inline.

Written with the requested file mode on every start (the certificates may have been
re-issued), through a temporary file so a reader never sees half a file.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

import yaml

from k3py.server.bootstrap.certs import TLSFiles


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_text(server_url: str, files: TLSFiles, name: str = "default") -> str:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {"server": server_url, "certificate-authority-data": _b64(files.ca_cert)},
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "preferences": {},
        "users": [
            {
                "name": name,
                "user": {
                    "client-certificate-data": _b64(files.admin_cert),
                    "client-key-data": _b64(files.admin_key),
                },
            }
        ],
    }
    return yaml.safe_dump(config, sort_keys=False)


def write_kubeconfig(path: Path, server_url: str, files: TLSFiles, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(kubeconfig_text(server_url, files))
    os.chmod(tmp, mode)
    os.replace(tmp, path)
