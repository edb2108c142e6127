"""The codec's compiled core, and the numpy path it stands in for.

The bulk decoder (:mod:`voipflow.collectors.codec.bulk`) walks the headers
and sets of every datagram of a call and gathers records out of the call's
buffer. Both run once per call; with numpy they still cost a dozen array
operations per set *position* and a fancy index per record. ``_walk.c`` does
the same walks in C, one pass over the datagrams, and copies each set's
records with one ``memcpy``:

* :func:`walk`: every datagram's header fields and sets. A datagram with
  template sets in front of its data sets (softflowd refreshes its templates
  that way) is walked too, so that it need not be decoded one by one.
* :func:`gather`: records of many sets into one array.
* :func:`addr4`: IPv4 address fields of those records as the 16-byte
  addresses of the flows.v1 columns, one pass instead of numpy's three.

The extension is built by ``pip install`` (``setup.py``, the system C
compiler) and is optional: without it :data:`AVAILABLE` is false and the
decoder takes the numpy path, with the same results
(``tests/collectors/test_core.py`` checks that on the corpus, on malformed
and on random input). ``VOIPFLOW_COLLECTOR_CODEC_CORE`` chooses.

The C code bounds-checks every length against its datagram and the buffer;
it raises nothing for bad export data (such datagrams are marked for the
one-by-one decoder, which counts them with their reasons), only
``ValueError`` for tables that contradict the buffer, which is a bug of the
caller.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numpy as np

_walk: ModuleType | None
try:
    from voipflow.collectors.codec import _walk  # type: ignore[attr-defined,no-redef]
except ImportError:  # not built (no C compiler at install): the numpy path
    _walk = None

#: Whether the compiled core was built and loads.
AVAILABLE = _walk is not None
#: What to do when it is missing, for the start-up message.
BUILD_HINT = (
    "the codec's compiled core is not built: install a C compiler (Debian: gcc, python3-dev) "
    "and rerun `make setup` (pip install -e .)"
)

# Columns of the per-datagram table (keep in step with the H_* enum of _walk.c).
H_VERSION, H_DOMAIN, H_KIND, H_SET_ID, H_SEQ, H_EXPORT_MS, H_UPTIME_MS = range(7)
H_FIRST_SET, H_NSETS, H_FIRST_TSET, H_NTSETS, H_COLUMNS = range(7, 12)
#: H_KIND: decode one by one; only data sets of one id; template sets, then
#: data sets of one id.
K_ONE, K_PLAIN, K_TEMPLATED = 0, 1, 2


def walk(
    buf: Any, offsets: np.ndarray, lengths: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every datagram's header and sets: (heads, data sets, template sets).

    ``heads`` has one row of the ``H_*`` columns per datagram; ``data sets``
    rows are (start of the records in ``buf``, their bytes, 0) and
    ``template sets`` rows (set id, start, end in ``buf``), each datagram's
    together (``H_FIRST_SET``/``H_NSETS``, ``H_FIRST_TSET``/``H_NTSETS``).
    """
    assert _walk is not None
    n = len(offsets)
    heads = np.empty((n, H_COLUMNS), dtype=np.int64)
    data, tmpl = _walk.walk(
        buf,
        np.ascontiguousarray(offsets, dtype=np.int64),
        np.ascontiguousarray(lengths, dtype=np.int64),
        heads,
    )
    return (
        heads,
        np.frombuffer(data, dtype=np.int64).reshape(-1, 3),
        np.frombuffer(tmpl, dtype=np.int64).reshape(-1, 3),
    )


def gather(buf: Any, starts: np.ndarray, counts: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``counts[i]`` records of ``dtype`` from ``starts[i]`` in ``buf``, every i, as one array."""
    assert _walk is not None
    total = int(counts.sum())
    out = np.empty(total, dtype=dtype)
    _walk.gather(
        buf,
        np.ascontiguousarray(starts, dtype=np.int64),
        np.ascontiguousarray(counts, dtype=np.int64),
        dtype.itemsize,
        out.view(np.uint8),
    )
    return out


def addr4(rec: np.ndarray, offset: int) -> np.ndarray:
    """The 4-byte field at ``offset`` of every record of ``rec`` (a contiguous
    structured array) as IPv4-mapped S16 addresses."""
    assert _walk is not None
    out = np.empty(len(rec), dtype="S16")
    if len(rec):
        _walk.addr4(rec.view(np.uint8), rec.dtype.itemsize, offset, out.view(np.uint8))
    return out
