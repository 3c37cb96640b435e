"""k3py: a k3s-style, single-command Kubernetes distribution written in Python.

The package is layered (see docs/architecture.md): ``api`` holds pure Kubernetes
semantics, ``store`` the revisioned key-value log, ``server`` the API server and the
control plane, ``client`` the one client interface every component uses, ``runtime``
the container runtime, ``agent`` the kubelet and node networking, and ``cli`` the typer
application that wires them together. import-linter enforces who may import whom.
"""

__version__ = "0.1.0"

# The Kubernetes release whose API k3py serves. kubectl's dispatcher on the development
# machines runs the kubectl matching this minor version.
KUBERNETES_VERSION = "v1.32.4"
