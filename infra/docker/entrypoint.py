"""The capture image's command line: ``capture`` (the service, the default command), ``resync``
(the one-off task, infra/modules/capture/tasks.tf) and ``source-check`` (the scheduled task,
infra/modules/capture/source_check.tf).

Only these commands, their components and the core: the image carries nothing of the operator
shell (totes_ops) or the local AWS emulation (local_aws).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from capture import cli as capture_cli
from totes_cdc.runtime import command_parser, run
from warehouse_loader import source_check


def main(argv: Sequence[str] | None = None) -> int:
    parser = command_parser("totes-cdc", "The capture service, its resync and the scheduled source check.",
                            [capture_cli.register, capture_cli.register_resync, source_check.register])
    return run(parser, argv)


if __name__ == "__main__":
    sys.exit(main())
