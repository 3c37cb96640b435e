"""The Kubernetes API server: registry over the store, watch cache, HTTP layer, discovery.

``build_apiserver`` wires the pieces; ``k3py.server.main`` starts it after the store.
"""
