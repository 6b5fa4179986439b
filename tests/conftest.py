import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"


def shared_data_dir() -> Path | None:
    env = os.environ.get("MVLIB_DATA")
    for cand in ([Path(env)] if env else []) + [SHARED]:
        if (cand / "cifar10" / "test.npz").is_file():
            return cand
    return None


@pytest.fixture(scope="session")
def data_root():
    d = shared_data_dir()
    if d is None:
        pytest.skip("the offline CIFAR copy (../shared/data or $MVLIB_DATA) is not present")
    return d


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def tiny_notebooks():
    """``tiny_notebooks(nbdir, {name: source})``: notebooks for pipeline tests (see :func:`write_tiny_notebooks`)."""
    return write_tiny_notebooks


def write_tiny_notebooks(nbdir: Path, sources: dict[str, str]) -> Path:
    """Notebooks ``<name>.ipynb`` in ``nbdir``: the pipeline's parameters cell, then ``sources[name]``."""
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook
    nbdir.mkdir(parents=True, exist_ok=True)
    for name, src in sources.items():
        nb = new_notebook(cells=[new_code_cell("profile = 'ci'\nprogress = False\nresults_dir = ''"),
                                 new_code_cell(src)])
        nb.cells[0].metadata["tags"] = ["parameters"]
        nb.metadata["kernelspec"] = {"name": "mvlib", "display_name": "mvlib", "language": "python"}
        nbformat.write(nb, nbdir / f"{name}.ipynb")
    return nbdir
