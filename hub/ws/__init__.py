"""The WebSocket node: connection lifecycle, local channel registry and fan-out."""
