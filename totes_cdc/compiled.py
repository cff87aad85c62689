"""Loops compiled by numba, for capture's snapshot: where Arrow and numpy would take many passes or
pieces per value (COPY's text split into columns, capture/copytext.py; the raw zone's Avro bodies,
totes_cdc/snapshot_files.py).

A kernel is compiled once per argument types and runs without the GIL (capture's workers are
threads). Its machine code is cached beside its module, or in ``$NUMBA_CACHE_DIR`` (the capture
image: /tmp/numba, its root filesystem being read-only), so a process compiles it once; capture
loads the kernels before it creates a slot (totes_cdc/snapshot_files.py, load_kernels).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import numba
import numba.core.cgutils
import numba.core.types
import numba.extending
import numpy as np
import numpy.typing as npt

F = TypeVar("F", bound=Callable[..., Any])
Bools = npt.NDArray[np.bool_]
Bytes = npt.NDArray[np.uint8]
Int32s = npt.NDArray[np.int32]
Ints = npt.NDArray[np.int64]

kernel = cast(Callable[[F], F], numba.njit(nogil=True, cache=True, boundscheck=False))


def _memcpy(typingctx: Any, dst: Any, at: Any, src: Any, start: Any, count: Any) -> Any:  # noqa: PLR0917
    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        target = context.make_array(signature.args[0])(context, builder, args[0])
        source = context.make_array(signature.args[2])(context, builder, args[2])
        numba.core.cgutils.raw_memcpy(builder, builder.gep(target.data, [args[1]]),  # type: ignore[no-untyped-call]
                                      builder.gep(source.data, [args[3]]), args[4], 1)
        return context.get_dummy_value()
    return numba.core.types.void(dst, at, src, start, count), codegen


# copy(dst, at, src, start, count) in a kernel: ``dst[at:at + count] = src[start:start + count]`` as
# one memcpy (uint8 arrays). A slice assignment compiles to a loop of bytes: three times slower.
copy = cast(Callable[[Bytes, int, Bytes, int, int], None], numba.extending.intrinsic(_memcpy))
