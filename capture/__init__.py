"""The capture service: reads the source's logical replication slot (pgoutput) and writes every row
change, as a contract change event, to the Kinesis stream.

Modules: ``decoder`` (pgoutput bytes → messages), ``events`` (messages → change events),
``producer`` (KPL aggregation and ordered PutRecords), ``kinesis`` (the AWS adapters),
``checkpoint`` (the acknowledged LSN), ``state`` and ``snapshot`` (the resumable initial snapshot),
``source`` (catalog, publication, slot, heartbeat queries), ``service`` (the replication loop),
``metrics``, ``config`` and ``cli``.
"""
