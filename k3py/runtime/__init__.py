"""The container runtime: images and containers, CRI-like; it knows nothing of Pods.

- ``reference``: image names normalised as Docker does;
- ``images``: the content-addressed store (OCI layout), unpacked layer dirs;
- ``layer``: safe unpacking of one layer tar (whiteouts → overlay whiteouts);
- ``archive``: ``docker save`` / OCI archive import; ``registry``: pulls (distribution API);
- ``spec``: ContainerSpec, SandboxSpec, ContainerStatus;
- ``containers``: ``ContainerRuntime``, the API the kubelet uses;
- ``supervisor``: the lean detached process that forks and owns containers;
- ``containerinit``: what a forked child does to become a container;
- ``cgroups`` (v1 and v2) and ``linux`` (ctypes syscalls).

This package imports nothing here: the supervisor loads it with ``python -S``.
"""
