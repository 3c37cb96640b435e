"""Startup, liveness and readiness probes: one asyncio task per started container.

Each probe runs after ``initialDelaySeconds``, every ``periodSeconds`` (default 10), each try
bounded by ``timeoutSeconds`` (default 1); a result counts after ``successThreshold``
consecutive successes (1) or ``failureThreshold`` consecutive failures (3). Handlers:

- ``exec``: the command runs inside the container; exit code 0 is success;
- ``httpGet``: an HTTP/1.1 GET to the pod IP (or ``host``) and port (a number or a container
  port's name); a status 200-399 is success;
- ``tcpSocket``: the connection opens.

Until the startup probe succeeds the others do not run and the container is not ``started``;
a failed startup or liveness probe kills the container (the pod manager restarts it per
restartPolicy); readiness decides the container's ``ready``. Without a readiness probe a
started container is ready. Changes wake the pod so its status is rewritten.

What the probes need of the kubelet is two narrow interfaces: ``RuntimeCalls`` (the runtime
and the thread pool its blocking calls run on — ``podruntime.PodRuntime``) and ``ProbeHost``
(the pod's address, events, waking the pod — the pod manager).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from k3py.runtime.containers import ContainerError, ContainerRuntime

log = logging.getLogger("k3py.kubelet.probes")

Obj = dict[str, Any]
T = TypeVar("T")


class RuntimeCalls(Protocol):
    """The container runtime, and how its blocking calls are run off the event loop."""

    @property
    def runtime(self) -> ContainerRuntime: ...

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T: ...


class ProbeHost(Protocol):
    """What probes need of the pod manager."""

    def pod_ip(self, uid: str) -> str: ...

    def event(self, pod: Obj, kind: str, reason: str, message: str, once: str = "") -> None: ...

    def wake(self, uid: str) -> None:
        """A probe result changed: sync the pod (its status is rewritten)."""


@dataclass
class ProbeState:
    cid: str
    started: bool
    ready: bool
    task: asyncio.Task[None] | None = None


def resolve_port(port: Any, container: Obj) -> int:
    if isinstance(port, int):
        return port
    if isinstance(port, str) and port.isdigit():
        return int(port)
    for item in container.get("ports") or []:
        if item.get("name") == port:
            return int(item["containerPort"])
    raise ValueError(f"port {port!r} is not a container port name")


class ProbeManager:
    def __init__(self, calls: RuntimeCalls, host: ProbeHost) -> None:
        self.calls = calls
        self.host = host
        self.states: dict[tuple[str, str], ProbeState] = {}

    def started(self, uid: str, name: str) -> bool:
        state = self.states.get((uid, name))
        return state.started if state is not None else True

    def ready(self, uid: str, name: str) -> bool:
        state = self.states.get((uid, name))
        return state.ready if state is not None else True

    def container_started(self, pod: Obj, container: Obj, cid: str) -> None:
        uid = pod["metadata"]["uid"]
        key = (uid, container["name"])
        old = self.states.pop(key, None)
        if old is not None and old.task is not None:
            old.task.cancel()
        startup = container.get("startupProbe")
        readiness = container.get("readinessProbe")
        liveness = container.get("livenessProbe")
        if not (startup or readiness or liveness):
            return
        state = ProbeState(cid=cid, started=startup is None, ready=readiness is None and startup is None)
        self.states[key] = state
        state.task = asyncio.create_task(self._run(pod, container, state), name=f"probe-{uid}-{container['name']}")

    def ensure_running(self, pod: Obj, container: Obj, cid: str) -> None:
        """Start the probes of a running container that has none (adopted after a restart)."""
        if not (container.get("startupProbe") or container.get("readinessProbe") or container.get("livenessProbe")):
            return
        state = self.states.get((pod["metadata"]["uid"], container["name"]))
        if state is None or state.cid != cid:
            self.container_started(pod, container, cid)

    def pod_removed(self, uid: str) -> None:
        for key in [k for k in self.states if k[0] == uid]:
            state = self.states.pop(key)
            if state.task is not None:
                state.task.cancel()

    async def stop(self) -> None:
        tasks = [s.task for s in self.states.values() if s.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.states.clear()

    async def _run(self, pod: Obj, container: Obj, state: ProbeState) -> None:
        uid = pod["metadata"]["uid"]
        try:
            startup = container.get("startupProbe")
            if startup and not await self._until(pod, container, state, startup, "Startup"):
                return
            if startup:
                state.started = True
                if container.get("readinessProbe") is None:
                    state.ready = True
                self.host.wake(uid)
            probes = [(p, kind) for p, kind in ((container.get("livenessProbe"), "Liveness"),
                                                 (container.get("readinessProbe"), "Readiness")) if p]
            await asyncio.gather(*(self._loop(pod, container, state, p, kind) for p, kind in probes))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("probe task of %s/%s failed", uid, container.get("name"))

    async def _until(self, pod: Obj, container: Obj, state: ProbeState, probe: Obj, kind: str) -> bool:
        """Run the startup probe until it succeeds (True) or fails for good (container killed)."""
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        failures = 0
        while True:
            ok, message = await self.check(pod["metadata"]["uid"], container, state.cid, probe)
            if ok:
                return True
            failures += 1
            self._unhealthy(pod, kind, message)
            if failures >= probe.get("failureThreshold", 3):
                await self._kill(pod, container, state, f"Container {container['name']} failed startup probe, will be restarted")
                return False
            await asyncio.sleep(probe.get("periodSeconds", 10))

    async def _loop(self, pod: Obj, container: Obj, state: ProbeState, probe: Obj, kind: str) -> None:
        uid = pod["metadata"]["uid"]
        await asyncio.sleep(probe.get("initialDelaySeconds", 0))
        successes = failures = 0
        while True:
            ok, message = await self.check(uid, container, state.cid, probe)
            if ok:
                successes, failures = successes + 1, 0
            else:
                successes, failures = 0, failures + 1
                self._unhealthy(pod, kind, message)
            if kind == "Readiness":
                if ok and successes >= probe.get("successThreshold", 1) and not state.ready:
                    state.ready = True
                    self.host.wake(uid)
                elif not ok and failures >= probe.get("failureThreshold", 3) and state.ready:
                    state.ready = False
                    self.host.wake(uid)
            elif not ok and failures >= probe.get("failureThreshold", 3):
                await self._kill(pod, container, state, f"Container {container['name']} failed liveness probe, will be restarted")
                return
            await asyncio.sleep(probe.get("periodSeconds", 10))

    def _unhealthy(self, pod: Obj, kind: str, message: str) -> None:
        self.host.event(pod, "Warning", "Unhealthy", f"{kind} probe failed: {message}")

    async def _kill(self, pod: Obj, container: Obj, state: ProbeState, message: str) -> None:
        self.host.event(pod, "Normal", "Killing", message)
        state.ready = False
        grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
        runtime = self.calls.runtime
        with contextlib.suppress(ContainerError):
            if grace > 0:
                await self.calls.run_blocking(runtime.stop_container, state.cid, float(grace))
            else:
                await self.calls.run_blocking(runtime.kill_container, state.cid, signal.SIGKILL)
        self.host.wake(pod["metadata"]["uid"])

    async def check(self, uid: str, container: Obj, cid: str, probe: Obj) -> tuple[bool, str]:
        """One try of ``probe`` (or of a lifecycle hook's handler) on container ``cid`` of pod
        ``uid``: (success, what failed)."""
        timeout = float(probe.get("timeoutSeconds", 1))
        try:
            if probe.get("exec"):
                command = list((probe["exec"] or {}).get("command") or [])
                runtime = self.calls.runtime
                result = await self.calls.run_blocking(
                    lambda: runtime.exec_sync(cid, command, timeout=timeout)
                )
                if result.exit_code == 0:
                    return True, ""
                output = (result.stdout + result.stderr).decode(errors="replace").strip()
                return False, f"command {command!r} exited with {result.exit_code}: {output}"
            pod_ip = self.host.pod_ip(uid)
            if probe.get("httpGet"):
                http = probe["httpGet"]
                host = http.get("host") or pod_ip
                port = resolve_port(http.get("port"), container)
                return await asyncio.wait_for(self._http(host, port, http), timeout)
            if probe.get("tcpSocket"):
                tcp = probe["tcpSocket"]
                host = tcp.get("host") or pod_ip
                port = resolve_port(tcp.get("port"), container)
                _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
                return True, ""
        except TimeoutError:
            return False, f"timeout after {timeout:g}s"
        except (OSError, ValueError, ContainerError) as e:
            return False, str(e)
        return False, "probe has no handler"

    @staticmethod
    async def _http(host: str, port: int, http: Obj) -> tuple[bool, str]:
        path = http.get("path") or "/"
        headers = "".join(f"{h.get('name')}: {h.get('value')}\r\n" for h in http.get("httpHeaders") or [])
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.32\r\n"
                f"Accept: */*\r\nConnection: close\r\n{headers}\r\n".encode()
            )
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        parts = line.decode(errors="replace").split()
        if len(parts) < 2 or not parts[1].isdigit():
            return False, f"HTTP probe got a malformed response {line[:80]!r}"
        code = int(parts[1])
        if 200 <= code < 400:
            return True, ""
        return False, f"HTTP probe failed with statuscode: {code}"
