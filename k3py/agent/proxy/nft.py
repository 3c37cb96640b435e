"""Running ``nft -f`` for the structural part of the proxy's table (chains, rules, sets).

One process per script, fed on stdin, in the calling thread's network namespace; the script
is one transaction (all of it or nothing). Errors carry nft's own message, which names the
offending line, but not the script itself (it can be megabytes).
"""

from __future__ import annotations

import subprocess

NFT_TIMEOUT = 120.0


class NftError(RuntimeError):
    """``nft`` refused a script (nothing of it was applied) or could not run."""


def apply(script: str) -> None:
    if not script:
        return
    try:
        result = subprocess.run(
            ["nft", "-f", "-"], input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT, check=False
        )
    except FileNotFoundError:
        raise NftError("nft is not installed: the service proxy needs nftables") from None
    except subprocess.TimeoutExpired:
        raise NftError(f"nft did not finish in {NFT_TIMEOUT:.0f}s") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        if len(detail) > 4000:
            detail = detail[:4000] + " ..."
        raise NftError(f"nft -f failed (exit {result.returncode}): {detail}")


def render_table(table: str, comment: str) -> str:
    """Creates ``table`` if missing (an existing one is left as it is)."""
    safe = "".join(c if c.isalnum() or c in " ._:/-" else "_" for c in comment)[:120]
    return f'add table ip {table} {{ comment "{safe}"; }}\n'
