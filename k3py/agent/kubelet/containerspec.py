"""The translation of one container of a Pod into the runtime's ``ContainerSpec`` (and of the
Pod into its ``SandboxSpec``) — pure, as upstream's ``generateContainerConfig``.

Everything a start reads besides the Pod comes in as values: ``NodeFacts`` (this node's
address, allocatable resources, ``--seccomp-default``, the ``kubernetes`` Service's variables)
and ``ContainerInputs`` (the ConfigMaps, Secrets and Services the pod manager fetched, the
pod's address and sandbox, its volumes' host paths, the attempt number, the image's configured
user). No I/O happens here, so every rule is unit-tested in milliseconds; what the spec needs
on disk (sub-paths, the termination-message file) is made afterwards by
``PodVolumes.realize_mounts``.

The rules, each from the module that owns it:

- environment (``podspec.container_env``): Service link variables, ``envFrom``, ``env`` with
  ``$(VAR)`` expansion and downward-API values (``status.podIP`` is the address this start
  uses, not yet written to the API); ``command``/``args`` expanded against it;
- mounts (``volumes.plan_mounts``): volumeMounts (subPath, read-only rules), the pod's /etc
  files and the termination-message file;
- security context, the container's field over the pod's: user and group, ``runAsNonRoot``
  (refused for root or an image whose user cannot be verified, the kubelet's words), the pod's
  supplemental groups and fsGroup, capabilities, privileged, ``allowPrivilegeEscalation``,
  read-only root filesystem, the seccomp profile (``podspec.seccomp_profile``), ``hostPID``;
  ``hostNetwork`` and ``hostIPC`` belong to the sandbox every container joins;
- resources and placement (``podspec``): cgroup shares/quota/memory limit from requests and
  limits, the pod's cgroup below its QoS class's group, the QoS class's oom_score_adj;
- labels: the pod's uid, namespace and name, the container's name, attempt and whether it is
  an init container — what lets the kubelet rebuild its view from the runtime after a restart.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k3py.agent.kubelet.podspec import (
    ContainerConfigError,
    command_and_args,
    container_env,
    oom_score_adj,
    pod_cgroup_path,
    pod_service_env,
    runtime_resources,
    seccomp_profile,
)
from k3py.agent.kubelet.volumes import plan_mounts, pod_hostname
from k3py.api.quantity import parse_quantity
from k3py.runtime.spec import ContainerSpec, SandboxSpec

Obj = dict[str, Any]

# The labels every runtime container of a pod carries (CRI's names where it has them).
LABEL_UID = "io.kubernetes.pod.uid"
LABEL_NAMESPACE = "io.kubernetes.pod.namespace"
LABEL_NAME = "io.kubernetes.pod.name"
LABEL_CONTAINER = "io.kubernetes.container.name"
LABEL_ATTEMPT = "io.kubernetes.container.restartCount"
LABEL_INIT = "k3py.io/init-container"
SANDBOX_SEPARATOR = "_"


def sandbox_name(namespace: str, name: str, uid: str) -> str:
    """The sandbox's runtime name; it ends with the pod uid (``sandbox_uid``)."""
    return SANDBOX_SEPARATOR.join((namespace, name, uid))


def sandbox_uid(sandbox_name_: str) -> str:
    return sandbox_name_.rsplit(SANDBOX_SEPARATOR, 1)[-1]


@dataclass(frozen=True)
class NodeFacts:
    """What a container's spec needs to know about this node."""

    node_ip: str = ""
    allocatable: Mapping[str, str] = field(default_factory=dict)  # resourceFieldRef limits, oom_score_adj
    seccomp_default: bool = False  # the kubelet's --seccomp-default
    seccomp_root: str = "/var/lib/k3py/agent/seccomp"  # Localhost profiles live below it
    service_env: Mapping[str, str] = field(default_factory=dict)  # the ``kubernetes`` Service's variables

    @property
    def memory_capacity(self) -> int:
        """Allocatable memory in bytes (0 when unknown: Burstable pods then get BestEffort's score)."""
        with contextlib.suppress(KeyError, ValueError, ArithmeticError):
            return int(parse_quantity(self.allocatable["memory"]))
        return 0


@dataclass(frozen=True)
class ContainerInputs:
    """What one start of one container reads besides the Pod (fetched or prepared before)."""

    pod_dir: Path  # the pod's directory on the node (volumes, /etc files, termination messages)
    init: bool = False
    attempt: int = 0  # the restart count this start will have
    pod_ip: str = ""
    sandbox_id: str = ""
    config_maps: Mapping[str, Obj | None] = field(default_factory=dict)  # None: not found
    secrets: Mapping[str, Obj | None] = field(default_factory=dict)
    services: Sequence[Obj] = ()  # the cluster's Services (link variables)
    volume_paths: Mapping[str, str] = field(default_factory=dict)  # volume name -> host path
    image_user: str | None = None  # the image's configured User; None: not looked up / unknown


def security_value(pod: Obj, container: Obj, name: str) -> Any:
    """A securityContext field as it applies to the container: its own, else the pod's."""
    own = container.get("securityContext") or {}
    if name in own:
        return own[name]
    return ((pod.get("spec") or {}).get("securityContext") or {}).get(name)


def needs_image_user(pod: Obj, container: Obj) -> bool:
    """True when ``runAsNonRoot`` can only be judged by the image's configured user."""
    return bool(security_value(pod, container, "runAsNonRoot")) and security_value(pod, container, "runAsUser") is None


def non_root_problem(run_as_user: Any, image_user: str | None) -> str:
    """Why ``runAsNonRoot`` refuses a container ("" when it may run), as the kubelet words it.
    ``image_user`` is the image's ``User`` (None when the image could not be read: not refused)."""
    if run_as_user is not None:
        return "container's runAsUser breaks non-root policy" if int(run_as_user) == 0 else ""
    if image_user is None:
        return ""
    name = image_user.split(":", 1)[0]
    if name in ("", "0", "root"):
        return "container has runAsNonRoot and image will run as root"
    if not name.isdigit():
        return f"container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root"
    return ""


def runtime_labels(pod: Obj, container: Obj, *, init: bool, attempt: int) -> dict[str, str]:
    meta = pod.get("metadata") or {}
    return {
        LABEL_UID: meta.get("uid", ""),
        LABEL_NAMESPACE: meta.get("namespace", ""),
        LABEL_NAME: meta.get("name", ""),
        LABEL_CONTAINER: container.get("name", ""),
        LABEL_ATTEMPT: str(attempt),
        LABEL_INIT: "true" if init else "false",
    }


def environment(pod: Obj, container: Obj, node: NodeFacts, inputs: ContainerInputs) -> dict[str, str]:
    """The container's environment for this start (see the module docstring)."""
    # The downward API sees the addresses this start uses: the status holding them may not be
    # written yet (a pod's first start), and hostIP is always this node's.
    env_pod = {**pod, "status": {**(pod.get("status") or {}), "podIP": inputs.pod_ip,
                                 "hostIP": node.node_ip,
                                 "podIPs": [{"ip": inputs.pod_ip}] if inputs.pod_ip else [],
                                 "hostIPs": [{"ip": node.node_ip}]}}
    return container_env(
        env_pod, container, config_maps=inputs.config_maps, secrets=inputs.secrets,
        service_env={**node.service_env, **pod_service_env(pod, list(inputs.services))},
        node_allocatable=node.allocatable,
    )


def container_spec(pod: Obj, container: Obj, node: NodeFacts, inputs: ContainerInputs) -> ContainerSpec:
    """The runtime spec of one start of ``container`` (an entry of the pod's ``containers`` or,
    with ``inputs.init``, ``initContainers``). Raises ``ContainerConfigError`` (a missing
    ConfigMap/Secret/key, a refused ``runAsNonRoot``, a bad seccomp profile) or ``VolumeError``
    (a bad volumeMount): the kubelet's CreateContainerConfigError."""
    spec = pod.get("spec") or {}
    env = environment(pod, container, node, inputs)
    command, args = command_and_args(container, env)
    mounts = plan_mounts(pod, container, inputs.volume_paths, env, pod_dir=inputs.pod_dir, attempt=inputs.attempt)
    seccomp = seccomp_profile(pod, container, seccomp_default=node.seccomp_default,
                              profile_root=node.seccomp_root)
    run_as_user = security_value(pod, container, "runAsUser")
    run_as_group = security_value(pod, container, "runAsGroup")
    user = ""
    if run_as_user is not None:
        user = str(run_as_user) + (f":{run_as_group}" if run_as_group is not None else "")
    if security_value(pod, container, "runAsNonRoot"):
        problem = non_root_problem(run_as_user, inputs.image_user)
        if problem:
            raise ContainerConfigError(problem)
    security = container.get("securityContext") or {}  # fields only a container has
    pod_security = spec.get("securityContext") or {}  # fields only a pod has
    capabilities = security.get("capabilities") or {}
    fs_group = pod_security.get("fsGroup")
    return ContainerSpec(
        name=container.get("name", ""),
        image=container.get("image", ""),
        command=command,
        args=args,
        env=env,
        working_dir=container.get("workingDir", ""),
        user=user,
        supplemental_groups=list(pod_security.get("supplementalGroups") or [])
        + ([int(fs_group)] if fs_group is not None else []),
        capabilities_add=list(capabilities.get("add") or []),
        capabilities_drop=list(capabilities.get("drop") or []),
        privileged=bool(security.get("privileged")),
        no_new_privs=security.get("allowPrivilegeEscalation") is False,
        seccomp=seccomp,
        host_pid=bool(spec.get("hostPID")),
        readonly_rootfs=bool(security.get("readOnlyRootFilesystem")),
        mounts=mounts,
        stdin=bool(container.get("stdin")),
        tty=bool(container.get("tty")),
        resources=runtime_resources(container),
        cgroup_parent=pod_cgroup_path(pod),
        oom_score_adj=oom_score_adj(pod, container, node.memory_capacity),
        # The sandbox holds what the pod's containers share: its own network, ipc and uts
        # namespaces, or the node's for hostNetwork (net, uts) and hostIPC (ipc).
        sandbox_id=inputs.sandbox_id,
        labels=runtime_labels(pod, container, init=inputs.init, attempt=inputs.attempt),
    )


def sandbox_spec(pod: Obj) -> SandboxSpec:
    """The pod's sandbox: its own network, ipc and uts namespaces, or the node's network (and
    hostname) with ``hostNetwork`` and the node's ipc namespace with ``hostIPC``."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    return SandboxSpec(
        name=sandbox_name(meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", "")),
        hostname=pod_hostname(pod)[:63],
        host_network=bool(spec.get("hostNetwork")),
        host_ipc=bool(spec.get("hostIPC")),
    )
