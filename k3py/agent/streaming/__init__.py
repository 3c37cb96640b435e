"""The kubelet streaming server: container logs, exec, attach and port-forward.

Layers, bottom up: `spdy_frames` (SPDY/3.1 wire codec), `spdy_session` (asyncio multiplexed
streams over a `transport.ByteTransport`), `remotecommand` and `portforward` (the Kubernetes
protocols on top of SPDY or WebSocket), `upgrade` (taking over an aiohttp connection), and
`server` (routes, TLS with client-certificate CN checks). The node-specific work is behind
`backend.StreamingBackend`. `proxy` is the API server's side: forwarding an upgrade (or a logs
GET) to a kubelet and piping the bytes.
"""
