"""The deck's own numbers (one data file, ``deck_numbers.csv``, source named in its header)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

DECK_FILE = Path(__file__).with_name("deck_numbers.csv")


def deck_numbers(table: str | None = None) -> pd.DataFrame:
    """Rows of the deck's tables: table, model, variant, dataset, top1, top5 (percent)."""
    df = pd.read_csv(DECK_FILE, comment="#")
    return df if table is None else df[df["table"] == table].reset_index(drop=True)
