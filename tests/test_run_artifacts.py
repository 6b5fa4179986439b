"""Training runs as artifacts (mvlib.study.run_artifacts): written, reused by other code once reproduced, refused
when perturbed, and the one start of a retraining whichever way its baseline came."""
import csv
import json

import pytest
import torch

from mvlib.artifact import ArtifactMismatch, load_artifact, recorded_predictions, save_artifact
from mvlib.study import experiment, records, run_artifacts
from mvlib.study.config import load_profile
from mvlib.study.experiment import find_baseline, train_baseline, train_run
from mvlib.study.run_setup import load_run_model, loaders, run_config
from mvlib.study.steps import StepGraph

MODEL = "reactnet18"
OTHER_CODE = "feedfacefeedface"


def _cfg(tmp_path, data_root, **kw):
    """Width 8, 200 train images, 100 validation and 100 test images, one epoch, artifacts on."""
    base = {"results_dir": str(tmp_path / "results"), "data_dir": str(data_root), "progress": False, "width": 8,
            "train_per_class": 20, "val_per_class": 10, "test_per_class": 10, "epochs": 1, "batch_size": 50,
            "eval_engine": False, "models": [MODEL], "artifacts": True}
    return load_profile("ci", {**base, **kw})


def _no_training(*args, **kwargs):
    raise AssertionError("fit was called: the run was trained, not reused")


def _logits(model, cfg):
    """Logits on the validation and test splits: compared exactly (a one-epoch network's argmax says little)."""
    _, val, test, _ = loaders(cfg)
    with torch.no_grad():
        return [torch.cat([model.cpu().eval()(x) for x, _ in loader]) for loader in (val, test)]


def test_a_finished_run_writes_its_artifact_with_both_splits(tmp_path, data_root):
    cfg = _cfg(tmp_path, data_root)
    model, run = train_baseline(cfg, MODEL)
    path = tmp_path / "results" / "artifacts" / "ci" / "01_baseline" / f"{run.run_id}.npz"
    assert run.artifact == path and path.is_file()
    loaded, meta = load_artifact(path)
    assert meta["keep_latent"]  # a baseline: later steps retrain from it
    assert meta["record"]["metrics"] == run.metrics and meta["record"]["identity"] == json.loads(
        (run.dir / "params.json").read_text())["identity"]
    assert meta["val_digest"]["top1"] == run.metrics["val_top1"] and meta["test_digest"]["top1"] == run.metrics["top1"]
    assert {k: v.tolist() for k, v in loaded.state_dict().items()} == {k: v.tolist() for k, v in
                                                                        load_run_model(run).state_dict().items()}
    found = run_artifacts.check_artifact(path, data_root)  # what tests/test_committed_artifacts.py runs
    assert found == {"val": {"n": 100, "checked": 100, "differing": 0},
                     "test": {"n": 100, "checked": 100, "differing": 0}}
    assert run_artifacts.check_artifact(path, data_root, images=30)["test"]["checked"] == 30
    print(f"ReActNet-18 width 8 with latent weights: {path.stat().st_size / 1024:.1f} KiB")
    # without artifacts nothing is written
    _, other = train_baseline(_cfg(tmp_path / "off", data_root, artifacts=False), MODEL)
    assert not other.artifact.exists() and not (tmp_path / "off" / "results" / "artifacts").exists()


def test_other_code_reuses_a_reproduced_artifact_without_training(tmp_path, data_root, monkeypatch):
    cfg = _cfg(tmp_path, data_root)
    model, run = train_baseline(cfg, MODEL)
    trained_under = run.identity["code_hash"]
    before = _logits(model, cfg)
    del model
    run.checkpoint.unlink()  # a fresh clone: the record and the artifact are committed, the checkpoint is not
    results = tmp_path / "results"
    assert StepGraph().runs_without_weights(results, "01") == []  # the artifact holds its weights
    other_graph = StepGraph(code_hash=lambda: OTHER_CODE)
    unread = other_graph.upstream_digest(results, "02_naive_majority_voter")

    monkeypatch.setattr(records, "code_hash", lambda: OTHER_CODE)
    monkeypatch.setattr(experiment, "fit", _no_training)
    lines = []
    reused, again = train_baseline(cfg, MODEL, log=lines.append)
    assert again.run_id == run.run_id and again.metrics == run.metrics
    assert [torch.equal(a, b) for a, b in zip(_logits(reused, cfg), before)] == [True, True]
    assert any(f"trained under code {trained_under}, verified under code {OTHER_CODE}" in line for line in lines)
    marker = json.loads((run.dir / f"verified-{OTHER_CODE}.json").read_text())
    assert (marker["trained_under"], marker["verified_under"]) == (trained_under, OTHER_CODE)
    assert marker["splits"]["test"] == {"n": 100, "checked": 100, "differing": 0}
    assert other_graph.upstream_digest(results, "02_naive_majority_voter") != unread  # now a record of that code
    assert sorted(p.name for p in (tmp_path / "results" / "runs" / "01_baseline").iterdir()
                  if not p.name.startswith(".")) == [run.run_id]  # no folder made for the other code

    # verified once: a second call of this code, and a lookup, reuse it without evaluating it again
    monkeypatch.setattr(run_artifacts, "compare_predictions", _no_training)
    assert train_baseline(cfg, MODEL)[1].run_id == run.run_id
    assert find_baseline(cfg, MODEL).run_id == run.run_id
    # the summaries (refreshed by the verification) list it once, as a run of the code that verified it
    rows = list(csv.DictReader(open(tmp_path / "results" / "runs.csv")))
    assert [(r["run_id"], r["code_hash"], r["trained_under"]) for r in rows] == [
        (run.run_id, OTHER_CODE, trained_under)]


def test_a_perturbed_artifact_is_named_and_trained_again(tmp_path, data_root, monkeypatch):
    cfg = _cfg(tmp_path, data_root)
    _, run = train_baseline(cfg, MODEL)
    model, meta = load_artifact(run.artifact)
    digests = {s: {**d, "predictions": p} for s, (d, p) in recorded_predictions(run.artifact).items()}
    rare = int(torch.bincount(torch.from_numpy(digests["val"]["predictions"]).long(), minlength=10).argmin())
    with torch.no_grad():  # one real parameter: every image now goes to the class it least went to
        model.classifier.bias[rare] += 1e4
    run.artifact.unlink()
    save_artifact(model, run.artifact, arch=meta["arch"], keep_latent=True, record=meta["record"],
                  val_digest=digests["val"], test_digest=digests["test"])
    expected = {s: int((d["predictions"] != rare).sum()) for s, d in digests.items()}
    assert expected["val"] > 0

    monkeypatch.setattr(records, "code_hash", lambda: OTHER_CODE)
    with pytest.raises(ArtifactMismatch, match=f"{expected['val']} of 100 val, {expected['test']} of 100 test "
                                               f"predictions differ"):
        train_baseline(_cfg(tmp_path, data_root, reuse_artifacts="strict"), MODEL)
    lines = []
    _, trained = train_baseline(cfg, MODEL, log=lines.append)
    assert trained.run_id != run.run_id and trained.identity["code_hash"] == OTHER_CODE
    refused = [line for line in lines if "not reused" in line]
    assert len(refused) == 1 and str(run.artifact.name) in refused[0], lines
    assert f"{expected['val']} of 100 val, {expected['test']} of 100 test predictions differ" in refused[0]
    assert not (run.dir / f"verified-{OTHER_CODE}.json").exists()


def test_a_retraining_starts_alike_from_a_reused_and_a_fresh_baseline(tmp_path, data_root, monkeypatch):
    cfg = _cfg(tmp_path, data_root)
    starts = []
    real_fit = experiment.fit

    def recording_fit(model, *args, **kwargs):
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real_fit(model, *args, **kwargs)
    monkeypatch.setattr(experiment, "fit", recording_fit)
    voter = {"name": "hmv", "fanins": [4], "tie": "pos"}

    def retrain(base, **kw):
        return train_run(run_config(cfg, **kw), "03_retrain", MODEL, "hmv4-retrain", init_from=base, voter=voter)

    _, base = train_baseline(cfg, MODEL)  # trained here: the fresh baseline
    retrained, run = retrain(base)
    fresh_start = starts[-1]
    trained = load_run_model(base).state_dict()  # the checkpoint's weights: the artifact kept them exactly
    assert all(torch.equal(fresh_start[k], trained[k]) for k in trained)
    _, meta = load_artifact(run.artifact)
    assert not meta["keep_latent"] and meta["arch"]["voter"] == {"spec": voter, "layers": None}

    monkeypatch.setattr(records, "code_hash", lambda: OTHER_CODE)
    count = len(starts)
    _, reused = train_baseline(cfg, MODEL)  # reused through its artifact: no training
    assert reused.run_id == base.run_id and len(starts) == count
    retrain(reused, force=True)  # force: trained again, although its own artifact would be reused
    assert set(starts[-1]) == set(fresh_start)
    assert all(torch.equal(starts[-1][k], fresh_start[k]) for k in fresh_start)
