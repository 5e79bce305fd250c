"""A port for a test's server to listen on."""

import socket


def free_port() -> int:
    """Return a port on 127.0.0.1 free right now (the server binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
