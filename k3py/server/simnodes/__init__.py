"""Simulated nodes (``k3py server --simulated-nodes N``): kubelets without containers.

See :mod:`k3py.server.simnodes.kubelet`. They use only the client, like a real agent.
"""
