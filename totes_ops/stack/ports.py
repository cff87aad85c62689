"""Local TCP ports of the servers the stack and the tests start: all on 127.0.0.1."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from totes_cdc.errors import ConfigError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def ensure_port_free(port: int, what: str) -> None:
    """ConfigError naming ``what`` when 127.0.0.1:port is already taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As servers bind (SO_REUSEADDR): connections of a just-stopped server in TIME_WAIT do not count.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            raise ConfigError(
                f"port {port} on 127.0.0.1 is already in use; choose another port for {what} "
                "or stop what is listening there") from None


def wait_until_answering(url: str, timeout: float, alive: Callable[[], bool]) -> bool:
    """Whether a local HTTP server answers ``url`` within ``timeout`` s while ``alive()`` holds."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2).close()  # nosec B310: our own http://127.0.0.1 URL
            return True
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if not alive() or time.monotonic() > deadline:
                return False
            time.sleep(0.1)
