"""HTTP upgrades to the streaming protocols: they live in `k3py.util.httpupgrade`, shared with
the API server's upgrade proxy; this module keeps the agent's import path."""

from k3py.util.httpupgrade import (
    CLOSE_HANDSHAKE_TIMEOUT,
    MAX_WEBSOCKET_MESSAGE,
    SPDY_UPGRADE,
    STREAM_PROTOCOL_HEADER,
    RawUpgradeTransport,
    UpgradeRefused,
    accept_spdy,
    accept_websocket,
    check_websocket,
    client_protocols,
    negotiate,
    wants_spdy,
    wants_websocket,
)

__all__ = [
    "CLOSE_HANDSHAKE_TIMEOUT",
    "MAX_WEBSOCKET_MESSAGE",
    "SPDY_UPGRADE",
    "STREAM_PROTOCOL_HEADER",
    "RawUpgradeTransport",
    "UpgradeRefused",
    "accept_spdy",
    "accept_websocket",
    "check_websocket",
    "client_protocols",
    "negotiate",
    "wants_spdy",
    "wants_websocket",
]
