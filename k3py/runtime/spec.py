"""The CRI-like description of a container and of a pod sandbox, and the status we report.

These are plain dataclasses the kubelet fills from a Pod; the runtime turns a ``ContainerSpec``
plus the image config into the ``config.json`` the supervisor executes. Field meanings follow the
CRI (``ContainerConfig``, ``LinuxContainerResources``, ``LinuxContainerSecurityContext``):
``command`` replaces the image Entrypoint and ``args`` its Cmd, exactly as Kubernetes does.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Mount:
    destination: str
    type: str = "bind"  # "bind" or "tmpfs"
    source: str = ""  # host path for a bind mount
    readonly: bool = False
    size: int = 0  # tmpfs size in bytes, 0 = kernel default
    # The source is a symlink-free path the kubelet checked (a subPath): bind exactly it, and
    # refuse it if a path component became a symlink since (a container racing the check).
    exact_source: bool = False


@dataclass
class Resources:
    cpu_shares: int = 0  # cgroup v1 shares (2..262144); 0 = leave the default
    cpu_quota: int = 0  # microseconds per period; 0 = unlimited
    cpu_period: int = 100_000
    memory_limit: int = 0  # bytes; 0 = unlimited
    pids_limit: int = 0  # 0 = unlimited


@dataclass
class SecurityProfile:
    """A container's seccomp profile, as the CRI's ``SecurityProfile`` names it."""

    profile_type: str = "Unconfined"  # "RuntimeDefault", "Unconfined" or "Localhost"
    localhost_ref: str = ""  # Localhost: the absolute path of the profile (JSON) on this node


@dataclass
class ContainerSpec:
    name: str
    image: str
    command: list[str] | None = None  # replaces the image Entrypoint
    args: list[str] | None = None  # replaces the image Cmd
    env: dict[str, str] = field(default_factory=dict)
    working_dir: str = ""
    user: str = ""  # "uid", "uid:gid", "name", "name:group"; empty = the image's User
    supplemental_groups: list[int] = field(default_factory=list)
    capabilities_add: list[str] = field(default_factory=list)
    capabilities_drop: list[str] = field(default_factory=list)  # "ALL" drops every one
    privileged: bool = False
    no_new_privs: bool = False  # true when allowPrivilegeEscalation is false
    seccomp: SecurityProfile = field(default_factory=SecurityProfile)  # privileged: unconfined
    host_pid: bool = False  # hostPID: the runtime's pid namespace instead of a new one
    readonly_rootfs: bool = False
    fuse_device: bool = False  # may read/write /dev/fuse (10:229); privileged may use every device
    mounts: list[Mount] = field(default_factory=list)
    hostname: str = ""  # used when the container has its own UTS namespace
    stdin: bool = False
    tty: bool = False
    resources: Resources = field(default_factory=Resources)
    oom_score_adj: int = 0  # the kubelet's per-QoS value (-997 Guaranteed ... 1000 BestEffort)
    cgroup_parent: str = ""  # below the runtime's cgroup parent, e.g. "kubepods/besteffort/pod<uid>"
    sandbox_id: str = ""  # join this sandbox's net, ipc and uts namespaces
    network: str = "host"  # without a sandbox: "host" or "none" (a private netns with only lo)
    log_path: str = ""  # CRI log file; default <data>/containers/<id>/container.log
    log_max_size: int = 10 << 20
    log_max_files: int = 5
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class SandboxSpec:
    name: str
    hostname: str = ""
    host_network: bool = False  # hostNetwork: the node's network and UTS namespaces (hostname)
    host_ipc: bool = False  # hostIPC
    labels: dict[str, str] = field(default_factory=dict)


@dataclass
class Sandbox:
    id: str
    name: str
    hostname: str
    netns_path: str  # bind-mounted namespace files, kept until the sandbox is removed;
    ipcns_path: str  # "" where the sandbox uses the host's namespace
    utsns_path: str
    created_at: int  # ns since the epoch


@dataclass
class ContainerStatus:
    id: str
    name: str
    image: str  # the reference the spec asked for
    image_id: str  # config digest
    state: str  # "created", "running", "exited"
    pid: int = 0
    exit_code: int | None = None
    reason: str = ""  # "Completed", "Error", "OOMKilled", "StartError", "Unknown"
    message: str = ""
    created_at: int = 0  # ns since the epoch
    started_at: int = 0
    finished_at: int = 0
    oom_killed: bool = False
    log_path: str = ""
    sandbox_id: str = ""
    labels: dict[str, str] = field(default_factory=dict)
