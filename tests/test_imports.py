"""Every module of mvlib and cuda_numba imports, in the fast tier too: the modules whose own tests are all in
the full tier (the torchrun worker, the CUDA kernels, the network benchmark) still load in ``make test``."""
import importlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MODULES = sorted(".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                 for pkg in ("mvlib", "cuda_numba") for p in (REPO / pkg).rglob("*.py"))


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)
