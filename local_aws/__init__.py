"""The local AWS emulation: what AWS does around the Lambda handlers, done on this machine.

``kinesis_runner`` is the Kinesis event source mapping of the stream processor (its durable
``checkpoint``s, the AWS-shaped ``events`` it delivers, its ``process_status`` file),
``sqs_runner`` the SQS event source mapping of the loader; both put their metrics through the one
sink of ``metrics``; ``cli`` gives them the ``process`` and ``load`` commands.
Nothing deployed imports this package.
"""
