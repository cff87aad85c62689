"""The emulator's SQS queues lose no message and bring none back when loaders delete at once while
S3 sends (the race :mod:`totes_ops.stack.emulator_server` closes), in moto's own queue objects."""

from __future__ import annotations

import threading
import uuid

from moto.sqs.models import sqs_backends

from totes_ops.stack import emulator_server

IN_FLIGHT = 150  # received, not deleted yet: what a warehouse outage leaves in the loader's queue
SENT = 200


def test_deletes_at_once_while_messages_arrive_keep_exactly_the_undeleted_messages():
    assert emulator_server is not None  # imported for the fix it makes to moto's Queue
    backend = sqs_backends["123456789012"]["eu-west-2"]
    name = f"race-{uuid.uuid4().hex[:8]}"
    queue = backend.create_queue(name, VisibilityTimeout="600")
    try:
        for n in range(IN_FLIGHT):
            backend.send_message(name, f"applied-{n}")
        received: list = []
        while len(received) < IN_FLIGHT:
            received += backend.receive_message(name, 10, 0, 600)

        def delete(messages: list) -> None:
            for message in messages:
                backend.delete_message(name, message.receipt_handle)

        def send() -> None:
            for n in range(SENT):
                backend.send_message(name, f"new-{n}")

        threads = [threading.Thread(target=delete, args=(received[k::2],)) for k in range(2)]
        threads.append(threading.Thread(target=send))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        bodies = sorted(message.body for message in queue._messages)
        assert bodies == sorted(f"new-{n}" for n in range(SENT))
    finally:
        backend.delete_queue(name)
