"""``python -m capture capture|resync``: capture's own entry point, the one the capture image runs
(``resync`` as a one-off task beside the running service)."""

from __future__ import annotations

import argparse
import logging
import sys

from capture import cli
from totes_cdc.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m capture")
    commands = parser.add_subparsers(required=True)
    cli.register(commands)
    cli.register_resync(commands)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"totes-cdc: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
