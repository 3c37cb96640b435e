"""The TLS contract between the API server and the kubelets, shared by both sides.

- The API server dials a kubelet's streaming server (:10250) with its own client certificate,
  CN ``kube-apiserver-kubelet-client`` (kubeadm's name), and the kubelet accepts no other
  identity — in particular not the cluster admin's.
- A kubelet serves a certificate signed by the cluster CA with CN ``system:node:<node>``,
  O ``system:nodes`` (upstream's ``kubernetes.io/kubelet-serving`` signer rules) and the node's
  name and addresses as SANs. The API server checks the chain, the address it dialled and the
  node's name (``peer_names_node``) before it sends a byte of the request.
- The in-process kubelet of ``k3py server`` gets that certificate signed directly; a joining
  ``k3py agent`` asks the server for it the way k3s keeps node secrets, with a Secret in
  ``kube-system``: the agent writes its certificate request (``csr.pem``, the private key never
  leaves the node) into the Secret ``serving_request_name(node)`` of type
  ``SERVING_REQUEST_TYPE``; the server's signer checks the request against the Node object and
  writes ``tls.crt`` — or, when it refuses, the annotation ``DENIED_ANNOTATION`` with the
  reason.
"""

from __future__ import annotations

import hashlib
from typing import Any

KUBELET_CLIENT_CN = "kube-apiserver-kubelet-client"
NODE_USER_PREFIX = "system:node:"
NODES_GROUP = "system:nodes"

SERVING_REQUEST_NAMESPACE = "kube-system"
SERVING_REQUEST_TYPE = "k3py.io/kubelet-serving"
CSR_KEY = "csr.pem"
CERT_KEY = "tls.crt"
DENIED_ANNOTATION = "k3py.io/kubelet-serving-denied"
NODE_LABEL = "k3py.io/node"
MAX_NAME = 253


def serving_request_name(node_name: str) -> str:
    """The Secret carrying ``node_name``'s request (k3s names its node Secrets the same way:
    ``<node>.node-password.k3s``); a hash stands in for names too long to fit."""
    name = f"{node_name}.kubelet-serving.k3py"
    if len(name) <= MAX_NAME:
        return name
    return hashlib.sha256(node_name.encode()).hexdigest()[:40] + ".kubelet-serving.k3py"


def node_user(node_name: str) -> str:
    return NODE_USER_PREFIX + node_name


def peer_names_node(peercert: dict[str, Any] | None, node_name: str) -> bool:
    """Whether a verified peer certificate (``SSLObject.getpeercert()``) carries ``node_name``
    as a DNS SAN: the kubelet at the address dialled is that node's, not another one's."""
    if not peercert:
        return False
    return any(
        kind == "DNS" and value.lower() == node_name.lower()
        for kind, value in peercert.get("subjectAltName", ())
    )


def peer_sans(peercert: dict[str, Any] | None) -> list[str]:
    """The SANs of a peer certificate, for error messages."""
    return [str(value) for _kind, value in (peercert or {}).get("subjectAltName", ())]
