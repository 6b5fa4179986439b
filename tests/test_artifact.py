"""Artifacts (mvlib.artifact): exact round trips of every model, no pickle, verification, size."""
import json
import os

import numpy as np
import pytest
import torch

from mvlib import artifact_signs
from mvlib.artifact import (ArtifactError, ArtifactMismatch, load_artifact, prediction_digest, save_artifact,
                            verify_artifact)
from mvlib.data import BatchLoader, load_split
from mvlib.layers import binary_convs, set_binarization
from mvlib.models import MODELS, TEACHERS, build_model, build_teacher

from conftest import shared_data_dir

WIDTH = 8
# every registered model, plus the variants whose binary layers differ: standardized weights (bnfree),
# no BN, a binary 1x1 shortcut, the binary-weight shortcut kept in full; and a real teacher
CASES = [(name, {}) for name in sorted(MODELS)] + [
    ("resnet18", {}), ("reactnet18", {"norm": "bnfree"}), ("reactneta", {"norm": "bnfree"}), ("birealnet18", {"norm": "none"}),
    ("reactnet18", {"binary_downsample": "binary"}), ("birealnet18", {"binary_downsample": "weights"}),
]


def arch_of(name, options, width=WIDTH):
    return {"model": name, "width": width, "num_classes": 10, "options": options}


@torch.no_grad()
def trained_like(model):
    """Random weights and statistics, as after training: mixed signs, exact zeros (sign +1) among the latent."""
    latent = {f"{n}.weight" for n, _ in binary_convs(model)}
    for key, t in model.state_dict().items():
        if not t.dtype.is_floating_point:
            continue
        if key in latent:
            t.copy_(torch.randn_like(t) * 0.01)
            t.view(-1)[::7] = 0.0
            t.view(-1)[3::7] = -0.0
        elif key.endswith("running_var"):
            t.copy_(torch.rand_like(t) + 0.5)
        else:
            t.add_(torch.randn_like(t) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def val_loader():
    """200 test images of CIFAR-10 where the offline copy is present, random images otherwise."""
    root = shared_data_dir()
    if root is not None:
        images, labels = load_split("cifar10", "test", root)
        images, labels = images[:200], labels[:200]
    else:
        g = torch.Generator().manual_seed(1)
        images = torch.randint(0, 256, (200, 3, 32, 32), generator=g, dtype=torch.uint8)
        labels = torch.randint(0, 10, (200,), generator=g)
    return BatchLoader(images, labels, batch_size=50, train=False, augment=False)


@pytest.mark.parametrize("keep_latent", [False, True], ids=["signs", "latent"])
@pytest.mark.parametrize("name,options", CASES, ids=[f"{n}-{'-'.join(map(str, o.values())) or 'default'}"
                                                     for n, o in CASES])
def test_round_trip_is_bit_identical(tmp_path, name, options, keep_latent):
    width = WIDTH // 2 if name == "reactneta" else WIDTH  # its last stage has 32x the width
    model = trained_like((build_teacher if name in TEACHERS else build_model)(name, width=width, **options))
    path = tmp_path / "net.npz"
    save_artifact(model, path, arch=arch_of(name, options, width), keep_latent=keep_latent, record={"epochs": 1})
    loaded, meta = load_artifact(path)
    x = torch.randn(6, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert meta["record"] == {"epochs": 1} and not loaded.training
    for (n, conv), (_, back) in zip(binary_convs(model), binary_convs(loaded)):
        (w, alpha), (w2, alpha2) = conv.binary_weight(), back.binary_weight()
        assert torch.equal(w, w2) and torch.equal(alpha, alpha2), n
        if keep_latent:
            assert torch.equal(conv.weight, back.weight), n


def test_file_holds_no_pickle_and_the_project_signs(tmp_path):
    model = trained_like(build_model("reactnet18", width=WIDTH))
    path = tmp_path / "net.npz"
    record = {"top1": 12.5, "cpu_hours": 10.25, "params": {"lr": 0.001}}
    save_artifact(model, path, arch=arch_of("reactnet18", {}), keep_latent=False, record=record)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    assert all(a.dtype != object for a in arrays.values())
    meta = json.loads(arrays["meta"].tobytes())
    assert meta["record"] == record and meta["arch"] == arch_of("reactnet18", {})
    conv = model.blocks[0].conv
    bits = np.unpackbits(arrays["signs/blocks.0.conv"], count=conv.weight.numel()).reshape(conv.weight.shape)
    assert (conv.weight == 0).sum() > 0  # +0.0 and -0.0 both binarize to +1
    assert np.array_equal(bits.astype(bool), (conv.weight >= 0).numpy())
    assert not any(k.startswith("latent/") for k in arrays)


def test_same_network_same_bytes(tmp_path):
    model = trained_like(build_model("birealnet18", width=WIDTH))
    for name in ("a.npz", "b.npz"):
        save_artifact(model, tmp_path / name, arch=arch_of("birealnet18", {}), keep_latent=False, record={})
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


def test_rows_the_search_misses_are_stored_in_full(tmp_path, monkeypatch):
    monkeypatch.setattr(artifact_signs, "SPREADS", (0.0,))  # one try of the centred search: some channels miss
    monkeypatch.setattr(artifact_signs, "WINDOW", 0)
    model = trained_like(build_model("reactnet18", width=WIDTH, norm="bnfree"))
    meta = save_artifact(model, tmp_path / "net.npz", arch=arch_of("reactnet18", {"norm": "bnfree"}),
                         keep_latent=False, record={})
    assert sum(layer["fallback_rows"] for layer in meta["layers"].values()) > 0
    loaded, _ = load_artifact(tmp_path / "net.npz")
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))


def test_verify_passes_then_counts_the_predictions_a_perturbation_changes(tmp_path, val_loader):
    model = trained_like(build_model("reactnet18", width=WIDTH))
    arch, digest = arch_of("reactnet18", {}), prediction_digest(model, val_loader)
    good = tmp_path / "good.npz"
    save_artifact(model, good, arch=arch, keep_latent=False, record={}, val_digest=digest)
    result = verify_artifact(good, val_loader)
    assert result.ok and result.differing == 0 and result.n == 200 and result.top1 == digest["top1"]

    with torch.no_grad():  # one real parameter moved: the file no longer gives what its record says
        logits = torch.cat([model(x) for x, _ in val_loader])
        gap = logits.max(1).values - logits[:, 3]  # what class 3 lacks to win, per image
        model.classifier.bias[3] += gap[gap > 0].median()  # about half of the others switch to it
    expected = int((prediction_digest(model, val_loader)["predictions"] != digest["predictions"]).sum())
    assert 0 < expected < 200
    bad = tmp_path / "bad.npz"
    save_artifact(model, bad, arch=arch, keep_latent=False, record={}, val_digest=digest)
    with pytest.raises(ArtifactMismatch, match=rf"bad.npz.*{digest['top1']:.2f}% recorded.*"
                                               rf"{expected} of 200 predictions differ"):
        verify_artifact(bad, val_loader)
    result = verify_artifact(bad, val_loader, strict=False)
    assert not result.ok and result.differing == expected and result.recorded_top1 == digest["top1"]


def test_verify_refuses_another_split(tmp_path, val_loader):
    model = trained_like(build_model("xnornet18", width=WIDTH))
    path = tmp_path / "net.npz"
    save_artifact(model, path, arch=arch_of("xnornet18", {}), keep_latent=False, record={},
                  val_digest=prediction_digest(model, val_loader))
    other = BatchLoader(val_loader.images[:100], val_loader.labels[:100], batch_size=50, train=False, augment=False)
    with pytest.raises(ArtifactError, match="not the split"):
        verify_artifact(path, other)


def test_an_arch_that_does_not_rebuild_the_model_is_refused(tmp_path):
    model = trained_like(build_model("reactnet18", width=WIDTH))
    with pytest.raises(ArtifactError, match="not the network"):
        save_artifact(model, tmp_path / "a.npz", arch=arch_of("reactnet18", {}, width=16), keep_latent=True, record={})
    set_binarization(model, weights=False)  # step 1 of two-step training: arch must say binary_weights=False
    with pytest.raises(ArtifactError, match="other logits"):
        save_artifact(model, tmp_path / "b.npz", arch=arch_of("reactnet18", {}), keep_latent=True, record={})
    assert not os.listdir(tmp_path)
    save_artifact(model, tmp_path / "c.npz", arch=arch_of("reactnet18", {"binary_weights": False}),
                  keep_latent=False, record={})


def test_size_reactnet18_width64(tmp_path, record_property):
    path = tmp_path / "reactnet18-w64.npz"
    save_artifact(build_model("reactnet18", width=64), path, arch=arch_of("reactnet18", {}, width=64),
                  keep_latent=False, record={})
    size = path.stat().st_size
    record_property("reactnet18_w64_bytes", size)
    print(f"ReActNet-18 width 64 without latent weights: {size / 2**20:.2f} MiB")
    assert size < 8 * 2**20, size
