"""Notebooks: one source (jupytext pairs in sync), no outputs committed, discoverable parameters."""
import logging
from pathlib import Path

import jupytext
import nbformat
import pytest
from papermill.translators import PythonTranslator

from mvlib.study.config import SCHEMA

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _cells(nb):
    return [(c.cell_type, c.source.strip(), tuple(c.metadata.get("tags", []))) for c in nb.cells]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_pair_in_sync_and_without_outputs(path):
    paired = path.with_suffix(".py")
    assert paired.is_file(), f"{path.name} has no paired {paired.name} (jupytext --set-formats ipynb,py:percent)"
    nb = nbformat.read(path, as_version=4)
    assert _cells(jupytext.read(paired)) == _cells(nb), (
        f"{path.name} and {paired.name} differ: run `jupytext --sync notebooks/{paired.name}`")
    for c in nb.cells:
        if c.cell_type == "code":
            assert not c.outputs and c.execution_count is None, f"{path.name} carries outputs (executed copies go to results/)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_parameters_are_schema_keys_that_papermill_can_list(path, caplog):
    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    lines = [ln for ln in cells[0].source.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    with caplog.at_level(logging.WARNING, logger="papermill"):
        params = PythonTranslator.inspect(cells[0])
    assert not [r for r in caplog.records if "Unable to parse" in r.getMessage()], caplog.text
    names = [p.name for p in params]
    assert len(names) == len(lines) and names[0] == "profile"
    unknown = set(names) - set(SCHEMA)
    assert not unknown, f"{path.name} lists parameters that are not configuration keys: {sorted(unknown)}"
    assert all(p.help for p in params), f"{path.name}: every parameter needs a comment saying what it is"


def test_no_notebook_generator_left():
    tools = Path(__file__).resolve().parent.parent / "tools"
    assert not list(tools.glob("nb*.py")), "notebooks have one source: their jupytext pair"
