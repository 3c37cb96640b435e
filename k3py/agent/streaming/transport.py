"""Byte transports of the streaming server: they live in `k3py.util.bytetransport`, shared with
the API server's upgrade proxy; this module keeps the agent's import path."""

from k3py.util.bytetransport import ByteTransport, StreamTransport, WebSocketTransport

__all__ = ["ByteTransport", "StreamTransport", "WebSocketTransport"]
