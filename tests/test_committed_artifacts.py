"""Every committed artifact (results/artifacts/) is reproduced by the current code, prediction for prediction.

The artifacts stand for trainings of many CPU hours that later code reuses
(:mod:`mvlib.study.run_artifacts`); a change to the library that alters what
they compute must show here, in the fast tier, not in a study that reuses one.
Evaluation only: each artifact is reloaded and its validation and test splits
predicted again, the first ``MVLIB_ARTIFACT_IMAGES`` images of each (default
1000, 0 = all; the labels' hash still covers the whole split). Skipped when no
artifact is committed or the offline CIFAR copy is absent.
"""
import os
from pathlib import Path

import pytest

from mvlib.study.run_artifacts import check_artifact

from conftest import shared_data_dir

ARTIFACTS = sorted((Path(__file__).resolve().parent.parent / "results" / "artifacts").glob("*/*/*.npz"))
IMAGES = int(os.environ.get("MVLIB_ARTIFACT_IMAGES", "1000")) or None


@pytest.mark.parametrize("path", ARTIFACTS or [None], ids=[p.stem for p in ARTIFACTS] or ["none"])
def test_committed_artifact_is_reproduced(path):
    if path is None:
        pytest.skip("no artifact is committed under results/artifacts/")
    data_dir = shared_data_dir()
    if data_dir is None:
        pytest.skip("the offline CIFAR copy (../shared/data or $MVLIB_DATA) is not present")
    found = check_artifact(path, data_dir, images=IMAGES)
    differing = {split: f"{r['differing']} of {r['checked']}" for split, r in found.items() if r["differing"]}
    assert not differing, f"{path.relative_to(path.parents[4])}: predictions differ under the current code: {differing}"
