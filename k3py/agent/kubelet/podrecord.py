"""What the kubelet knows about one pod beyond what the runtime says.

The runtime holds the containers and the sandbox (``podruntime``); a ``PodRecord`` holds the
rest for as long as the pod is on this node: its address and start time, why a container is
waiting (image pull back-off, CrashLoopBackOff, a config error), the wait for its volumes,
termination messages read, what was released after it finished, and the status last written.
Everything here can be lost (a restart of k3py starts with fresh records): it is rebuilt from
the Pod's status and the runtime on the first sync.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from k3py.agent.kubelet.images import PullBackOff
from k3py.agent.kubelet.volumes import MountWait

Obj = dict[str, Any]


@dataclass
class PodRecord:
    uid: str
    key: str  # namespace/name
    sandbox_id: str = ""
    pod_ip: str = ""
    start_time: str = ""
    network_torn_down: bool = False
    volumes_released: bool = False  # a finished pod's mounts are gone (its files stay until deletion)
    mount_wait: MountWait = field(default_factory=MountWait)  # the wait for the pod's volumes
    network_sandbox: str = ""  # the sandbox whose namespace the pod network was set up in
    waiting: dict[str, tuple[str, str]] = field(default_factory=dict)  # container -> (reason, message)
    image_backoff: PullBackOff = field(default_factory=PullBackOff)
    last_status: Obj | None = None
    init_failed: bool = False
    events_sent: set[str] = field(default_factory=set)
    messages: dict[str, str] = field(default_factory=dict)  # container id -> termination message
    failure: tuple[str, str] | None = None  # (reason, message) when the kubelet failed the pod
    server_status: Obj | None = None  # the status as the server stored our last write
