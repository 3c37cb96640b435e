"""Writes each pod's status: what the runtime, the probes and the pod manager know, as the API
shows it.

For every container of the pod a ``status.ContainerView`` is gathered — the runtime's current
and previous attempt (``podruntime``), the restart count from the attempt label, started/ready
from the probes, the waiting reason the pod manager recorded (ContainerCreating,
ImagePullBackOff, CrashLoopBackOff...), the imageID as containerd reports it (``images``) and an
exited container's termination message (the file it wrote, or with FallbackToLogsOnError the
end of its log after a failure; read once per container) — and ``status.pod_status`` turns them
into the status, with the pod's QoS class. It is written (a merge patch of the status
subresource, removing what no longer applies) only when it differs from the last one written,
so a steady pod costs no write; a 404 means the pod is gone and its status no longer matters.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Any, Protocol

from k3py.agent.kubelet.images import ImageManager
from k3py.agent.kubelet.podrecord import PodRecord
from k3py.agent.kubelet.podruntime import PodRuntime, attempt_of, attempts_in
from k3py.agent.kubelet.podspec import qos_class
from k3py.agent.kubelet.status import ContainerView, pod_status
from k3py.agent.kubelet.volumes import PodVolumes
from k3py.api.errors import ApiError
from k3py.client.interface import PODS, Client
from k3py.runtime.spec import ContainerStatus

Obj = dict[str, Any]

TERMINATION_MESSAGE_MAX = 4096


class ProbeResults(Protocol):
    def started(self, uid: str, container: str) -> bool: ...
    def ready(self, uid: str, container: str) -> bool: ...


class StatusWriter:
    """See the module docstring."""

    def __init__(self, client: Client, node_ip: str, pod_runtime: PodRuntime, probes: ProbeResults,
                 images: ImageManager, pods_dir: Path) -> None:
        self.client = client
        self.node_ip = node_ip
        self.pod_runtime = pod_runtime
        self.probes = probes
        self.images = images
        self.pods_dir = pods_dir

    async def write(self, pod: Obj, record: PodRecord) -> None:
        """Write the pod's status if it changed since the last write."""
        await self.images.resolve_ids(self.pod_runtime.statuses(record.uid).values())
        init_views, views = self.views(pod, record)
        status = pod_status(
            pod, init_views=init_views, views=views, pod_ip=record.pod_ip, host_ip=self.node_ip,
            start_time=record.start_time, sandbox_ready=bool(record.sandbox_id), init_failed=record.init_failed,
            failure=record.failure,
        )
        status["qosClass"] = qos_class(pod)
        if status == record.last_status:
            return
        old = pod.get("status") or {}
        patch = {"status": {**{k: None for k in old if k not in status and k not in ("qosClass",)}, **status}}
        meta = pod["metadata"]
        try:
            written = await self.client.patch(PODS, meta["name"], patch, meta["namespace"], subresource="status")
        except ApiError as e:
            if e.code == 404:
                return
            raise
        record.last_status = status
        record.server_status = written.get("status")

    def views(self, pod: Obj, record: PodRecord) -> tuple[list[ContainerView], list[ContainerView]]:
        """The (init containers', containers') views of the pod."""
        statuses = self.pod_runtime.statuses(record.uid)
        spec = pod.get("spec") or {}
        result = []
        for init in (True, False):
            views = []
            for container in spec.get("initContainers" if init else "containers") or []:
                name = container["name"]
                attempts = attempts_in(statuses, name, init)
                current = self._with_message(record, container, attempts[-1]) if attempts else None
                previous = self._with_message(record, container, attempts[-2]) if len(attempts) > 1 else None
                reason, message = record.waiting.get(name, ("", ""))
                running = current is not None and current.state == "running"
                if running:
                    reason, message = "", ""
                started = running and self.probes.started(record.uid, name)
                ready = started and self.probes.ready(record.uid, name)
                if init:
                    ready = current is not None and current.state == "exited" and current.exit_code == 0
                views.append(ContainerView(
                    name=name, image=container.get("image", ""), current=self.images.with_image_id(current),
                    previous=self.images.with_image_id(previous),
                    restart_count=attempt_of(current) if current else 0,
                    ready=ready, started=started, waiting_reason=reason, waiting_message=message,
                ))
            result.append(views)
        return result[0], result[1]

    def _with_message(self, record: PodRecord, container: Obj, status: ContainerStatus) -> ContainerStatus:
        """The status with its termination message (read once per container)."""
        if status.state != "exited":
            return status
        message = record.messages.get(status.id)
        if message is None:
            message = ""
            path = PodVolumes(self.pods_dir / record.uid).termination_log(container["name"], attempt_of(status))
            with contextlib.suppress(OSError):
                with open(path, "rb") as handle:
                    message = handle.read(TERMINATION_MESSAGE_MAX).decode(errors="replace")
            if (not message and status.exit_code != 0
                    and container.get("terminationMessagePolicy") == "FallbackToLogsOnError"):
                message = log_tail(status.log_path)
            record.messages[status.id] = message
        if not message:
            return status
        return dataclasses.replace(status, message=message)


def log_tail(log_path: str, lines: int = 80, limit: int = 2048) -> str:
    """The last lines of a CRI log as plain text (FallbackToLogsOnError)."""
    try:
        with open(log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            raw = handle.read()
    except OSError:
        return ""
    text = []
    for line in raw.splitlines()[-lines:]:
        parts = line.split(b" ", 3)
        if len(parts) == 4:
            text.append(parts[3] + (b"\n" if parts[2] == b"F" else b""))
    return b"".join(text)[-limit:].decode(errors="replace")
