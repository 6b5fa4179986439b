"""The float CIFAR-10 teacher (mvlib.teacher): shapes, whitening, augmentation, TTA, training, CLI.

Everything runs at small widths on a few hundred images; the full-scale run
(10 epochs, 45,000 images) is the command in mvlib.teacher's docstring.
"""
import copy
import json

import pytest
import torch
import torch.nn.functional as F

from mvlib.bench.teacher_run import main as teacher_main
from mvlib.data import load_split
from mvlib.teacher import (Recipe, augment, build_teacher, evaluate, make_optimizer, normalize, train_step,
                           train_teacher, whitening_filters)

TINY = dict(width_scale=0.125, batch_size=32, epochs=1)


def _smooth_images(n: int, seed: int = 0) -> torch.Tensor:
    """uint8 images with strong neighbour correlation (upsampled 8x8 noise), like natural images have."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    return (F.interpolate(low, size=32, mode="bilinear", align_corners=False) * 255).to(torch.uint8)


def _labels(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 10, (n,), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_widths():
    model = build_teacher(0.125)
    assert [b.conv2.out_channels for b in model.blocks] == [8, 32, 32]
    assert [b.conv2.out_channels for b in build_teacher().blocks] == [64, 256, 256]
    out = model(normalize(_smooth_images(4)).contiguous(memory_format=torch.channels_last))
    assert out.shape == (4, 10) and out.dtype == torch.float32


def test_whitening_decorrelates_the_data_patches():
    x = normalize(_smooth_images(64))
    model = build_teacher(0.125)
    model.set_whitening(x)
    w = model.whiten.weight
    assert w.shape == (24, 3, 2, 2) and not w.requires_grad
    torch.testing.assert_close(w[12:], -w[:12])  # the negated copy
    # projected on the first 12 filters, the patches have a diagonal second moment of at most 1
    z = F.conv2d(x, w[:12]).permute(0, 2, 3, 1).reshape(-1, 12).double()
    moment = z.T @ z / len(z)
    diag = moment.diagonal()
    assert (moment - torch.diag(diag)).abs().max() < 1e-3
    assert diag.max() <= 1.0 + 1e-4 and diag[0] > 0.99  # eps shrinks only the weakest directions


def test_whitening_stays_frozen_through_training():
    images, labels = _smooth_images(96), _labels(96)
    model, _ = train_teacher(images, labels, seed=0, whiten_bias_epochs=1, epochs=2, width_scale=0.125,
                             batch_size=32)
    torch.testing.assert_close(model.whiten.weight, whitening_filters(normalize(images)), rtol=0, atol=0)
    assert not model.whiten.weight.requires_grad and not model.whiten.bias.requires_grad


def test_augment_flips_and_shifts_within_the_reflected_border():
    x = normalize(_smooth_images(6))
    flip = torch.tensor([True, False, True, False, True, False])
    torch.testing.assert_close(augment(x, flip, 0, torch.Generator()), torch.where(flip.view(-1, 1, 1, 1),
                                                                                   x.flip(-1), x))
    out = augment(x, flip, 2, torch.Generator().manual_seed(3))
    padded = F.pad(torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x), (2,) * 4, mode="reflect")
    for i in range(len(x)):
        windows = [padded[i, :, r:r + 32, c:c + 32] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], win) for win in windows)


def test_tta_is_the_mean_of_both_views():
    model = build_teacher(0.125).eval()
    x = normalize(_smooth_images(8)).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        torch.testing.assert_close(model(x, tta=True), 0.5 * (model(x) + model(x.flip(-1))))


def test_training_is_deterministic_given_the_seed():
    images, labels = _smooth_images(128, 1), _labels(128, 1)
    runs = [train_teacher(images, labels, seed=s, **TINY)[0].state_dict() for s in (5, 5, 6)]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def _batch_loss(model, x, y) -> float:
    """Label-smoothed loss with batch statistics, on a copy (the running statistics stay untouched)."""
    m = copy.deepcopy(model).train()
    with torch.no_grad():
        return F.cross_entropy(m(x.contiguous(memory_format=torch.channels_last)), y, label_smoothing=0.2).item()


def test_one_epoch_on_real_images_reduces_the_loss(data_root):
    images, labels = load_split("cifar10", "train", data_root, per_class=52, val_per_class=500)
    images, labels = images[:512], labels[:512]
    settings = dict(width_scale=0.25, batch_size=32, epochs=1, seed=0)
    torch.manual_seed(0)  # the same start train_teacher makes
    start = build_teacher(0.25)
    start.set_whitening(normalize(images))
    trained, history = train_teacher(images, labels, **settings)
    x = normalize(images)
    assert _batch_loss(trained, x, labels) < _batch_loss(start, x, labels)
    assert history["epochs"][0]["steps"] == 16 and history["recipe"]["batch_size"] == 32


def test_optimizer_groups_follow_the_recipe():
    r = Recipe(batch_size=512)
    model = build_teacher(0.125)
    bias_group, other_group = make_optimizer(model, r).param_groups
    assert bias_group["lr"] == pytest.approx(r.lr / 2 * 64) and other_group["lr"] == pytest.approx(r.lr / 2)
    # the decay per step (lr x weight_decay) is the same in both groups
    assert (bias_group["lr"] * bias_group["weight_decay"]
            == pytest.approx(other_group["lr"] * other_group["weight_decay"]))
    trained = {id(p) for p in other_group["params"]}
    assert id(model.whiten.bias) in trained and id(model.whiten.weight) not in trained
    x, y = normalize(_smooth_images(16)), _labels(16)
    loss, out = train_step(model.train(), make_optimizer(model, r), x.contiguous(memory_format=torch.channels_last),
                           y, 0.2)
    assert out.shape == (16, 10) and torch.isfinite(loss)


def test_bench_mode_prints_an_estimate(capsys):
    teacher_main(["--bench", "--width-scale", "0.125", "--batch-size", "16", "--bench-steps", "1"])
    assert "img/s" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_trains_and_writes_weights_and_record(data_root, tmp_path):
    out = tmp_path / "teacher.pt"
    teacher_main(["--data-dir", str(data_root), "--per-class", "5", "--width-scale", "0.125", "--batch-size", "16",
                  "--epochs", "1", "--out", str(out)])
    record = json.loads(out.with_suffix(".json").read_text())
    assert out.is_file() and record["val_split"]["images"] == 5000 and record["train_split"]["images"] == 50
    assert 0 <= record["val_top1"] <= 1 and 0 <= record["val_top1_tta"] <= 1
    assert record["environment"]["cpu"] and record["environment"]["torch"] == torch.__version__
    model = build_teacher(0.125)
    model.load_state_dict(torch.load(out, weights_only=True)["model"])
    assert evaluate(model, *load_split("cifar10", "val", data_root, per_class=5, val_per_class=500)) >= 0
