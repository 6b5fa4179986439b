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
