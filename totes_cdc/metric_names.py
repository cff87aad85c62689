"""The pipeline's own CloudWatch metrics, as settings.json ``metrics`` defines them.

Each emitter (capture, stream_processor, loader) puts its metrics in ``metrics_namespace`` with one
dimension, ``metrics.dimension`` = the emitter's ``service``; that dimension is "service", the one
Powertools gives every metric of a Lambda function. Terraform's alarms and dashboard read
the same section, so an alarm watches exactly the series the code emits.
"""

from __future__ import annotations

from totes_cdc.settings import settings


def namespace() -> str:
    """The CloudWatch namespace of every metric the pipeline puts."""
    return str(settings()["metrics_namespace"])


def service(emitter: str) -> str:
    """The dimension value every metric of ``emitter`` carries."""
    return str(settings()["metrics"]["emitters"][emitter]["service"])


def dimensions(emitter: str) -> dict[str, str]:
    """The dimensions (name -> value) of every metric ``emitter`` puts."""
    return {settings()["metrics"]["dimension"]: service(emitter)}


def units(emitter: str) -> dict[str, str]:
    """The metrics ``emitter`` puts: name -> CloudWatch unit."""
    return dict(settings()["metrics"]["emitters"][emitter]["names"])
