"""``<state-dir>/stack.json``: how the other commands find a running ``totes-cdc up``.

``up`` writes the file once its stack is ready (DSNs, the emulator's endpoint, region and
credentials, the PIDs of everything it started) and removes it when it stops. Any other command
run with the same state dir takes from it what it was not given explicitly, and says so on
stderr. A file whose ``up`` process is gone (killed with SIGKILL, machine rebooted) is stale: it
is reported and ignored, never used, since its servers and emulator are gone with it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from totes_cdc.errors import ConfigError
from totes_cdc.runtime import alive

FILE_NAME = "stack.json"


def _runs_totes_cdc(pid: int) -> bool:
    """Whether ``pid`` runs totes-cdc: after a reboot the PID may belong to another program."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # no /proc: the PID alone has to do
        return True
    return b"totes" in cmdline


@dataclass(frozen=True)
class RunningStack:
    """A live stack described by its stack.json."""

    path: Path
    info: Mapping[str, Any]

    @property
    def run_dir(self) -> Path:
        """The components' own state dir (their status files, checkpoints and logs)."""
        return Path(self.info["run_dir"])

    def dsn(self, role: str) -> str:
        return str(self.info[f"{role}_dsn"])

    def aws_env(self) -> dict[str, str]:
        """The environment that points boto3 at the stack's emulator."""
        return {"AWS_ENDPOINT_URL": self.info["aws_endpoint_url"],
                "AWS_DEFAULT_REGION": self.info["aws_region"],
                "AWS_ACCESS_KEY_ID": self.info["aws_access_key_id"],
                "AWS_SECRET_ACCESS_KEY": self.info["aws_secret_access_key"]}


class StaleStack(ConfigError):
    """stack.json exists but the ``up`` that wrote it is gone."""


def find(state_dir: Path) -> RunningStack | None:
    """The live stack of ``state_dir``; None when there is no stack.json; StaleStack when it is stale."""
    path = state_dir / FILE_NAME
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise StaleStack(f"{path} cannot be read ({exc}): not used") from None
    pid = info.get("pid") if isinstance(info, dict) else None
    if not isinstance(pid, int):
        raise StaleStack(f"{path} names no `up` process: not used")
    if not alive(pid) or not _runs_totes_cdc(pid):
        raise StaleStack(f"{path} is stale: the `totes-cdc up` that wrote it (pid {pid}) is gone; "
                         "not used (start the stack again, or delete the file)")
    return RunningStack(path, info)


@dataclass(frozen=True)
class Taken:
    """What a command took from the stack: DSNs per role and whether the AWS environment."""

    stack: RunningStack
    dsns: tuple[str, ...]
    aws: bool

    def describe(self) -> str:
        what = [f"{role} DSN" for role in self.dsns]
        if self.aws:
            what.append(f"AWS endpoint {self.stack.info['aws_endpoint_url']} with its region and "
                        "credentials")
        return (f"using the running stack of {self.stack.path} (up pid {self.stack.info['pid']}): "
                + ", ".join(what))


def apply(stack: RunningStack, given_dsns: Mapping[str, str | None],
          environ: MutableMapping[str, str]) -> Taken:
    """What to take from ``stack``: the roles whose DSN was not given, and the AWS settings.

    ``given_dsns`` maps each role a command takes a DSN for to the DSN it was given (None when
    neither its option nor its variable was set). Unless ``environ`` already points boto3
    somewhere (``AWS_ENDPOINT_URL``), the emulator's endpoint, region and credentials are put in it.
    """
    aws = "AWS_ENDPOINT_URL" not in environ
    if aws:
        environ.update(stack.aws_env())
    return Taken(stack, tuple(role for role, dsn in given_dsns.items() if dsn is None), aws)
