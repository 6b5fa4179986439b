"""Keep Numba's on-disk cache of this package consistent with its sources.

Numba invalidates a cached function when *its own* source file changes, not
when a function it inlines or an ``@intrinsic`` it calls (defined in another
module) changes: after an edit of :mod:`cuda_numba.bitops`, the cached
convolution kernels of :mod:`cuda_numba.cpu_kernels` would keep running the
old micro-kernel. This guard stores a hash of every source file of the package
next to the cache and drops the package's cached functions when it differs.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
STAMP = "sources.sha256"


def sources_hash() -> str:
    h = hashlib.sha256()
    for f in sorted(PACKAGE.glob("*.py")):
        h.update(f.name.encode())
        h.update(f.read_bytes())
    return h.hexdigest()


def drop_stale_kernel_cache(cache_dir: Path | None = None) -> bool:
    """Delete this package's Numba cache files if any source changed since they were written; True if it did.

    ``cache_dir``: where Numba keeps them (``__pycache__`` beside the sources,
    the default without ``NUMBA_CACHE_DIR``). A read-only install is left alone.
    """
    cache_dir = cache_dir or PACKAGE / "__pycache__"
    stamp = cache_dir / STAMP
    current = sources_hash()
    try:
        if stamp.is_file() and stamp.read_text().strip() == current:
            return False
        dropped = False
        if cache_dir.is_dir():
            for f in list(cache_dir.glob("*.nbi")) + list(cache_dir.glob("*.nbc")):
                f.unlink(missing_ok=True)
                dropped = True
        cache_dir.mkdir(exist_ok=True)
        stamp.write_text(current + "\n")
        return dropped
    except OSError:
        return False
