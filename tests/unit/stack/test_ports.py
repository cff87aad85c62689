"""``up`` hands out the dashboard's address only once it answers (the first browser test once
opened it before the dashboard's process had bound its port: connection refused)."""

from __future__ import annotations

import http.server
import threading
import time

from totes_ops.stack.ports import free_port, wait_until_answering


def test_a_server_that_starts_late_is_waited_for():
    port = free_port()
    server: list[http.server.HTTPServer] = []

    def serve_after_a_moment() -> None:
        time.sleep(0.5)
        server.append(http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler))
        server[0].serve_forever()

    thread = threading.Thread(target=serve_after_a_moment, daemon=True)
    thread.start()
    try:
        assert wait_until_answering(f"http://127.0.0.1:{port}/", 10, lambda: True)
    finally:
        while not server and thread.is_alive():  # it may have failed to bind
            time.sleep(0.05)
        if server:
            server[0].shutdown()
            server[0].server_close()


def test_a_process_that_died_is_not_waited_for():
    began = time.monotonic()
    assert not wait_until_answering(f"http://127.0.0.1:{free_port()}/", 30, lambda: False)
    assert time.monotonic() - began < 5
