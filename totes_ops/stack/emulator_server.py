"""The AWS emulator's server process: moto's server, with one race in its SQS queues closed.

moto 5.2's ``Queue.delete_message`` builds the queue's new message list from the list it started
with, then puts it in place, outside the lock ``Queue.add_message`` takes. With two deletes at
once, the later one puts back a list taken before the earlier one finished: the message the earlier
one deleted comes back, and a message sent in between (S3 notifying the loader's queue of a new
file while loaders delete the files they applied) is gone for good. In the chaos suite, after a
warehouse outage had left hundreds of messages in flight, a processed file was put and its
notification never reached the loader (the file was never read): this race is the one way found in
moto's code for that to happen. SQS itself loses no message, so here each delete runs under the
queue's lock. Measured in moto's own queue objects, two threads deleting 300 messages in flight
while a third sent 500, four runs: 110-140 deleted messages came back each time, and one sent
message was lost in two of them; with the lock (one run), neither.
``tests/unit/stack/test_emulator_server.py`` runs the same race, smaller, and fails without the
lock.

Run as ``python -m totes_ops.stack.emulator_server``, with moto's server arguments.
"""

from __future__ import annotations

from moto.server import main
from moto.sqs.models import Queue

_delete_message = Queue.delete_message


def _delete_message_under_lock(self: Queue, receipt_handle: str) -> None:
    with self._messages_lock:
        _delete_message(self, receipt_handle)


Queue.delete_message = _delete_message_under_lock  # type: ignore[method-assign]

if __name__ == "__main__":
    main()
