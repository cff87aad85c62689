"""The local AWS emulation: what AWS does around the Lambda handlers, done on this machine.

``kinesis_runner`` is the Kinesis event source mapping of the stream processor (its durable
``checkpoint``s, the AWS-shaped ``events`` it delivers, and ``emf``: CloudWatch Logs turning the
handler's EMF lines into metrics), ``sqs_runner`` the SQS event source mapping of the loader;
``cli`` gives them the ``process`` and ``load`` commands.
Nothing deployed imports this package.
"""
