"""The operator shell: the ``totes-cdc`` command line, the local stack, status, simulate, replay.

It imports the components and the core; nothing deployed imports it.
"""
