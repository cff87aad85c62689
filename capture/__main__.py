"""``python -m capture capture|resync``: capture's commands without the operator shell, as the
benchmarks and the tests run them in a process of their own (the image's entry point,
``infra/docker/entrypoint.py``, registers the same two beside the source check)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from capture import cli
from totes_cdc.runtime import command_parser, run


def main(argv: Sequence[str] | None = None) -> int:
    return run(command_parser("python -m capture", "The capture service and its resync.",
                              [cli.register, cli.register_resync]), argv)


if __name__ == "__main__":
    sys.exit(main())
