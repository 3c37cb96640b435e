"""Container lifecycle hooks: ``postStart`` right after a container starts, ``preStop`` before it
is stopped.

A handler is ``exec`` (a command in the container) or ``httpGet`` (to the pod's address), run
with the probes' handler code (``probes.ProbeManager.check``) and bounded by the hook's time
(30 s for postStart; the remaining grace period for preStop), or ``sleep``. What happens on
failure is the caller's: a failed postStart hook kills the container (FailedPostStartHook), a
failed preStop hook is only reported (FailedPreStopHook) and the stop goes on.
"""

from __future__ import annotations

import asyncio
from typing import Any

from k3py.agent.kubelet.probes import ProbeManager

Obj = dict[str, Any]

POST_START_TIMEOUT = 30.0


async def run_hook(prober: ProbeManager, uid: str, container: Obj, cid: str, handler: Obj,
                   timeout: float) -> str | None:
    """Run one lifecycle hook of container ``cid`` of pod ``uid``; None on success, else what
    failed, in the kubelet's words."""
    if handler.get("sleep"):
        await asyncio.sleep(float((handler["sleep"] or {}).get("seconds", 0)))
        return None
    probe = {key: handler[key] for key in ("exec", "httpGet", "tcpSocket") if handler.get(key)}
    if not probe:
        return "lifecycle hook has no handler"
    probe["timeoutSeconds"] = max(1, int(timeout))
    ok, message = await prober.check(uid, container, cid, probe)
    if ok:
        return None
    kind = "Exec" if "exec" in probe else "HTTP"
    return f"{kind} lifecycle hook for Container \"{container.get('name')}\" failed: {message}"
