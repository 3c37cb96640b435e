"""The streaming upgrade proxy: it lives in `k3py.util.streamproxy`, where the API server (which
may not import k3py.agent) uses it for pods/exec, attach and portforward; this module keeps the
agent's import path."""

from k3py.util.streamproxy import (
    FORWARDED_REQUEST_HEADERS,
    FORWARDED_UPGRADE_HEADERS,
    UpstreamError,
    proxy_streaming_get,
    proxy_streaming_upgrade,
)

__all__ = [
    "FORWARDED_REQUEST_HEADERS",
    "FORWARDED_UPGRADE_HEADERS",
    "UpstreamError",
    "proxy_streaming_get",
    "proxy_streaming_upgrade",
]
