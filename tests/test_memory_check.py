"""tools/memory_check.py: the pre-flight memory check of a profile's trainings (docs/PAPER_PROFILE.md)."""
import importlib.util
import json
import subprocess
import sys

import pytest

from mvlib.environment import REPO_ROOT
from mvlib.study.config import load_profile

spec = importlib.util.spec_from_file_location("memory_check", REPO_ROOT / "tools" / "memory_check.py")
memory_check = importlib.util.module_from_spec(spec)
spec.loader.exec_module(memory_check)


def test_each_training_is_checked_at_the_batch_its_recipe_trains_at():
    batches = memory_check.train_batches(load_profile("paper"))
    assert batches[("birealnet18", 64, "none")] == 512 and batches[("reactnet18", 64, "none")] == 256
    assert batches[("resnet34", 64, "none")] == 128  # the teacher's own batch
    # notebook 09's trees (by their voter tag): the recipes' batches
    assert batches[("reactnet18", 64, "hmv-g2x2x2x2x2x2-tiepos")] == 256


@pytest.mark.slow
def test_a_probe_in_a_fresh_process_sees_the_larger_batch_take_more_memory():
    # the tool's own child mode: a fresh process, so the peak is this probe's and not an earlier test's
    out = subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "memory_check.py"), "--device", "cpu",
                          "--child", "birealnet18", "16", "hmv-g2x2x2x2-tiepos"],
                         capture_output=True, text=True, check=True)
    p1, p2 = json.loads(out.stdout.strip().splitlines()[-1])
    assert 0 < p1 < p2
