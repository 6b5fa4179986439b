"""Authoring helper: write a notebook from (kind, source) cells, without outputs.

    python tools/nb.py  (imported by per-notebook scripts; not used at run time)
"""
from __future__ import annotations

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HEADER_IMPORTS = """import mvlib
from mvlib.config import notebook_config
_names_before_parameters = set(globals())"""

# the `parameters` cell every study notebook shares (papermill injects its overrides after it)
PARAMS_CELL = ("params", """
profile = "cpu"  # ci | cpu | paper; any configuration key may be set here too (see mvlib/config.py)""")


def write(path: str, cells: list[tuple[str, str]]) -> None:
    nb = new_notebook()
    nb.metadata["kernelspec"] = {"name": "mvlib", "display_name": "mvlib (.venv)", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for kind, src in cells:
        if kind == "md":
            nb.cells.append(new_markdown_cell(src.strip("\n")))
        elif kind == "params":
            c = new_code_cell(src.strip("\n"))
            c.metadata["tags"] = ["parameters"]
            nb.cells.append(c)
        else:
            nb.cells.append(new_code_cell(src.strip("\n")))
    for i, c in enumerate(nb.cells):
        c["id"] = f"c{i:02d}"
    nbformat.write(nb, path)
