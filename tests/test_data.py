"""Data loading: the shared real copy, generated folders, every kind of bad file, batching."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mvlib.data import (CIFAR_MEAN_STD, BatchLoader, DataError, class_balanced_indices,
                        dataset_num_classes, inspect_npz, load_split, resolve_data_dir)

# The lossless offline copy: $MVLIB_DATA when it is a root holding cifar10/, else a shared/data folder
# beside the checkout.
SHARED = next((p for p in (Path(os.environ.get("MVLIB_DATA", "")).expanduser(),
                           Path(__file__).resolve().parents[2] / "shared" / "data")
               if (p / "cifar10" / "test.npz").is_file()), Path("../shared/data"))
needs_shared = pytest.mark.skipif(not (SHARED / "cifar10" / "test.npz").is_file(),
                                  reason=f"shared CIFAR copy not found at {SHARED}")


def write_split(folder: Path, name: str, n: int = 40, num_classes: int = 10, seed: int = 0, **override):
    """Write a small valid npz split (labels cycle through the classes); override arrays by keyword."""
    rng = np.random.default_rng(seed)
    arrays = {"images": rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
              "labels": np.arange(n, dtype=np.int64) % num_classes}
    arrays.update(override)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / name, **arrays)
    return arrays


@pytest.fixture
def folder(tmp_path):
    write_split(tmp_path, "train.npz", n=60, seed=1)
    write_split(tmp_path, "test.npz", n=20, seed=2)
    return tmp_path


# ---------------------------------------------------------------- real data
@needs_shared
def test_shared_cifar10_test_split():
    x, y = load_split("cifar10", "test", SHARED)
    assert x.shape == (10000, 3, 32, 32) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and torch.bincount(y).tolist() == [1000] * 10
    # Same file, given as the dataset folder itself.
    x2, _ = load_split("cifar10", "test", SHARED / "cifar10", per_class=3)
    assert torch.equal(x2, x[:30])  # the test split is class-interleaved


@needs_shared
def test_shared_train_files_by_header():
    # Read only the npy headers: the 150 MB train array is never decompressed here.
    assert inspect_npz(SHARED / "cifar10" / "train.npz") == {
        "images": ((50000, 32, 32, 3), np.dtype(np.uint8)), "labels": ((50000,), np.dtype(np.int64))}
    assert inspect_npz(SHARED / "cifar100" / "train_subset.npz")["images"][0] == (10000, 32, 32, 3)


@needs_shared
def test_shared_cifar100_subset(monkeypatch):
    monkeypatch.setenv("MVLIB_DATA", str(SHARED))
    x, y = load_split("cifar100", "train", train_file="train_subset.npz", per_class=2)
    assert x.shape == (200, 3, 32, 32) and torch.bincount(y).tolist() == [2] * 100


@needs_shared
def test_dataset_folder_of_the_other_dataset_is_refused():
    with pytest.raises(DataError, match="holds cifar10"):
        resolve_data_dir("cifar100", SHARED / "cifar10")


# ---------------------------------------------------------------- folders
def test_resolve_data_dir(tmp_path, monkeypatch):
    import mvlib.data
    monkeypatch.delenv("MVLIB_DATA", raising=False)
    monkeypatch.setattr(mvlib.data, "data_search_path", lambda: [])  # no folder anywhere
    assert resolve_data_dir("cifar10", None) is None
    assert resolve_data_dir("cifar10", "") is None
    write_split(tmp_path / "cifar10", "test.npz")
    assert resolve_data_dir("cifar10", tmp_path) == tmp_path / "cifar10"
    assert resolve_data_dir("cifar10", tmp_path / "cifar10") == tmp_path / "cifar10"
    monkeypatch.undo()
    monkeypatch.setenv("MVLIB_DATA", str(tmp_path))
    assert resolve_data_dir("cifar10", None) == tmp_path / "cifar10"
    with pytest.raises(DataError, match="not a folder"):
        resolve_data_dir("cifar10", tmp_path / "nowhere")
    with pytest.raises(DataError, match="neither"):
        resolve_data_dir("cifar100", tmp_path)
    with pytest.raises(ValueError, match="unknown dataset"):
        resolve_data_dir("mnist", tmp_path)


def test_generated_folder_roundtrip(tmp_path):
    arrays = write_split(tmp_path, "test.npz", n=30, seed=5)
    x, y = load_split("cifar10", "test", tmp_path)
    assert torch.equal(x, torch.from_numpy(arrays["images"]).permute(0, 3, 1, 2))
    assert torch.equal(y, torch.from_numpy(arrays["labels"]))
    # A chosen train file name, e.g. cifar100's train_subset.npz.
    write_split(tmp_path, "train_subset.npz", n=200, num_classes=100)
    x, y = load_split("cifar100", "train", tmp_path, train_file="train_subset.npz")
    assert x.shape == (200, 3, 32, 32) and int(y.max()) == 99


# ---------------------------------------------------------------- bad data
def test_missing_file(tmp_path):
    write_split(tmp_path, "test.npz")
    with pytest.raises(DataError, match=r"train\.npz: file not found"):
        load_split("cifar10", "train", tmp_path)


def test_truncated_file(tmp_path):
    write_split(tmp_path, "test.npz", n=50)
    path = tmp_path / "test.npz"
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 30, 100):
        path.write_bytes(data[:cut])
        with pytest.raises(DataError, match=r"test\.npz: (truncated, corrupt|not a readable)"):
            load_split("cifar10", "test", tmp_path)
        with pytest.raises(DataError, match="test.npz"):
            inspect_npz(path)


def test_corrupt_bytes(tmp_path):
    write_split(tmp_path, "test.npz", n=50)
    path = tmp_path / "test.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = bytes(64)  # damage inside the images member
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"test\.npz"):
        load_split("cifar10", "test", tmp_path)


@pytest.mark.parametrize("override, message", [
    ({"images": np.zeros((10, 32, 32, 3), np.float32)}, "'images' must be uint8"),
    ({"labels": np.arange(10, dtype=np.int32)}, "'labels' must be int64"),
    ({"images": np.zeros((10, 3, 32, 32), np.uint8)}, r"shape \[N, 32, 32, 3\]"),
    ({"images": np.zeros((10, 28, 28, 3), np.uint8)}, r"shape \[N, 32, 32, 3\]"),
    ({"labels": np.zeros((10, 1), np.int64)}, r"'labels' must have shape \[N\]"),
    ({"labels": np.full(10, 10, np.int64)}, r"labels must lie in \[0, 9\]"),
    ({"labels": np.full(10, -1, np.int64)}, r"labels must lie in \[0, 9\]"),
    ({"labels": np.zeros(9, np.int64)}, "10 images but 9 labels"),
    ({"labels": None}, r"missing array\(s\) \['labels'\]"),
    ({"images": None}, r"missing array\(s\) \['images'\]"),
])
def test_malformed_arrays(tmp_path, override, message):
    base = {"images": np.zeros((10, 32, 32, 3), np.uint8), "labels": np.arange(10, dtype=np.int64)}
    base.update(override)
    write_split(tmp_path, "test.npz", **base)
    with pytest.raises(DataError, match=message) as info:
        load_split("cifar10", "test", tmp_path)
    assert "test.npz" in str(info.value)
    assert isinstance(info.value, ValueError)


def test_pickled_object_arrays_are_refused(tmp_path):
    np.savez(tmp_path / "test.npz", images=np.array([object()], dtype=object), labels=np.zeros(1, np.int64))
    with pytest.raises(DataError, match="test.npz"):
        load_split("cifar10", "test", tmp_path)


def test_torchvision_path_refuses_other_train_files(monkeypatch):
    import mvlib.data
    monkeypatch.delenv("MVLIB_DATA", raising=False)
    monkeypatch.setattr(mvlib.data, "data_search_path", lambda: [])
    with pytest.raises(DataError, match="needs a data folder"):
        load_split("cifar100", "train", None, train_file="train_subset.npz")


# ---------------------------------------------------------------- subsets
def test_class_balanced_subset(tmp_path):
    labels = np.array([3, 1, 1, 0, 3, 2, 0, 1, 2, 3, 0, 2], dtype=np.int64)
    assert class_balanced_indices(labels, 2, 4).tolist() == [0, 1, 2, 3, 4, 5, 6, 8]
    # Classes 4..9 twice each after the first part: class 0 has 3 images in all.
    labels = np.concatenate([labels, np.tile(np.arange(4, 10), 2)])
    write_split(tmp_path, "train.npz", n=len(labels), labels=labels)
    idx = class_balanced_indices(labels, 2, 10)
    assert idx.tolist() == [0, 1, 2, 3, 4, 5, 6, 8] + list(range(12, 24))  # original relative order
    x_all, _ = load_split("cifar10", "train", tmp_path)
    x, y = load_split("cifar10", "train", tmp_path, per_class=2)
    assert torch.equal(x, x_all[idx]) and y.tolist() == labels[idx].tolist()
    assert torch.bincount(y).tolist() == [2] * 10
    with pytest.raises(DataError, match="class 4 has 2 images, fewer than per_class=3"):
        load_split("cifar10", "train", tmp_path, per_class=3)


def test_num_classes():
    assert dataset_num_classes("cifar10") == 10 and dataset_num_classes("cifar100") == 100
    with pytest.raises(ValueError):
        dataset_num_classes("svhn")


# ---------------------------------------------------------------- batches
def _images(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g), torch.arange(n) % 10


def test_eval_batches_are_normalized_and_in_order():
    x, y = _images(50)
    loader = BatchLoader(x, y, 16, train=False, augment=False, device="cpu")
    batches = list(loader)
    assert len(loader) == len(batches) == 4 and batches[-1][0].shape == (2, 3, 32, 32)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in CIFAR_MEAN_STD["cifar10"])
    xb = torch.cat([b[0] for b in batches])
    torch.testing.assert_close(xb, (x.float() / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.cat([b[1] for b in batches]), y)


def test_train_batches_shuffle_per_epoch_and_drop_last():
    x, y = _images(50)
    loader = BatchLoader(x, y, 16, train=True, augment=False, device="cpu", seed=3)
    assert len(loader) == 3
    loader.set_epoch(0)
    e0 = torch.cat([b[1] for b in loader])
    e0_again = torch.cat([b[1] for b in loader])
    loader.set_epoch(1)
    e1 = torch.cat([b[1] for b in loader])
    assert torch.equal(e0, e0_again) and not torch.equal(e0, e1)
    assert len(e0) == 48 and len(set(e0.tolist())) <= 10


def test_augmentation_is_deterministic_from_seed_and_epoch():
    x, y = _images(64)
    a = BatchLoader(x, y, 32, train=True, augment=True, device="cpu", seed=7)
    b = BatchLoader(x.clone(), y.clone(), 32, train=True, augment=True, device="cpu", seed=7)
    a.set_epoch(5)
    b.set_epoch(5)  # e.g. a run resumed at epoch 5 in a fresh process
    for (xa, ya), (xb, yb) in zip(a, b):
        assert xa.shape == (32, 3, 32, 32) and xa.dtype == torch.float32
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    c = BatchLoader(x, y, 32, train=True, augment=True, device="cpu", seed=8)
    c.set_epoch(5)
    assert not torch.equal(next(iter(a))[0], next(iter(c))[0])


def test_crop_and_flip_against_a_per_image_reference():
    x, y = _images(40, seed=2)
    loader = BatchLoader(x, y, 40, train=False, augment=True, device="cpu", seed=1)
    order, offsets, flips = loader._draws()
    assert torch.equal(order, torch.arange(40)) and flips.any() and (~flips).any()
    got = loader._augment(x, offsets, flips)
    for i in range(40):  # the obvious one-image-at-a-time definition
        padded = torch.zeros(3, 40, 40, dtype=torch.uint8)
        padded[:, 4:36, 4:36] = x[i]
        oy, ox = offsets[i].tolist()
        ref = padded[:, oy:oy + 32, ox:ox + 32]
        if flips[i]:
            ref = ref.flip(-1)
        assert torch.equal(got[i], ref), i
    # Offsets cover the whole 0..8 range and the centre crop is the identity.
    assert offsets.min() >= 0 and offsets.max() <= 8
    centre = loader._augment(x[:1], torch.tensor([[4, 4]]), torch.tensor([False]))
    assert torch.equal(centre, x[:1])
    flipped = loader._augment(x[:1], torch.tensor([[4, 4]]), torch.tensor([True]))
    assert torch.equal(flipped, x[:1].flip(-1))
    # The padding is black (pixel 0): a shifted crop shows a zero border.
    shifted = loader._augment(x[:1], torch.tensor([[0, 0]]), torch.tensor([False]))
    assert (shifted[0, :, :4, :] == 0).all() and (shifted[0, :, :, :4] == 0).all()


def test_loader_rejects_bad_inputs():
    x, y = _images(8)
    with pytest.raises(ValueError):
        BatchLoader(x.float(), y, 4, train=True, augment=False, device="cpu")
    with pytest.raises(ValueError):
        BatchLoader(x, y[:5], 4, train=True, augment=False, device="cpu")
    with pytest.raises(ValueError):
        BatchLoader(x, y, 16, train=True, augment=False, device="cpu")  # no full batch


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_gpu_batches_equal_cpu_batches():
    x, y = _images(64)
    cpu = BatchLoader(x, y, 32, train=True, augment=True, device="cpu", seed=4)
    gpu = BatchLoader(x, y, 32, train=True, augment=True, device="cuda", seed=4)
    for (xc, yc), (xg, yg) in zip(cpu, gpu):
        torch.testing.assert_close(xg.cpu(), xc, rtol=0, atol=1e-6)
        assert torch.equal(yg.cpu(), yc)


# ---------------------------------------------------------------- validation split and data identity
def test_validation_split_is_the_last_images_of_each_class_and_never_trained_on(tmp_path):
    from mvlib.data import train_val_indices
    labels = np.arange(60, dtype=np.int64) % 10  # six images per class
    write_split(tmp_path, "train.npz", n=60, labels=labels)
    train_idx, val_idx = train_val_indices(labels, 2, 10)
    assert sorted(val_idx.tolist()) == list(range(40, 60))  # the last two of every class
    assert not set(train_idx.tolist()) & set(val_idx.tolist())
    x_all, _ = load_split("cifar10", "train", tmp_path)
    xv, yv = load_split("cifar10", "val", tmp_path, val_per_class=2)
    assert torch.equal(xv, x_all[40:60]) and torch.bincount(yv).tolist() == [2] * 10
    # a train subset of any size stays outside the validation split
    for per_class in (0, 1, 4):
        xt, _ = load_split("cifar10", "train", tmp_path, per_class=per_class, val_per_class=2)
        flat = {bytes(img.numpy()) for img in xt}
        assert not flat & {bytes(img.numpy()) for img in xv}
        assert len(xt) == 10 * (per_class or 4)
    with pytest.raises(DataError, match="too few to hold out"):
        load_split("cifar10", "train", tmp_path, val_per_class=6)
    with pytest.raises(ValueError, match="needs val_per_class"):
        load_split("cifar10", "val", tmp_path)


@needs_shared
def test_shared_cifar10_validation_split():
    xv, yv = load_split("cifar10", "val", SHARED, val_per_class=500)
    xt, yt = load_split("cifar10", "train", SHARED, per_class=2000, val_per_class=500)
    assert len(xv) == 5000 and torch.bincount(yv).tolist() == [500] * 10
    assert len(xt) == 20000 and torch.bincount(yt).tolist() == [2000] * 10


def test_split_identity_sees_contents_and_membership(tmp_path):
    from mvlib.data import split_identity
    write_split(tmp_path / "a", "train.npz", n=60, seed=1)
    a = split_identity("cifar10", "train", tmp_path / "a", val_per_class=2)
    assert split_identity("cifar10", "train", tmp_path / "a", val_per_class=2) == a
    assert split_identity("cifar10", "train", tmp_path / "a", val_per_class=1)["indices_sha256"] != a["indices_sha256"]
    assert split_identity("cifar10", "val", tmp_path / "a", val_per_class=2)["indices_sha256"] != a["indices_sha256"]
    # the same images with shuffled labels are other data
    labels = np.random.default_rng(0).permutation(np.arange(60, dtype=np.int64) % 10)
    write_split(tmp_path / "b", "train.npz", n=60, seed=1, labels=labels)
    assert split_identity("cifar10", "train", tmp_path / "b", val_per_class=2)["file_sha256"] != a["file_sha256"]
    # a file replaced in place is read again (the cache looks at size and modification time)
    import time
    time.sleep(0.01)
    write_split(tmp_path / "a", "train.npz", n=60, seed=1, labels=labels)
    assert split_identity("cifar10", "train", tmp_path / "a", val_per_class=2)["file_sha256"] != a["file_sha256"]


def test_data_search_order(tmp_path, monkeypatch):
    """$MVLIB_DATA, then the per-user config, then data/ in the checkout or a shared/data folder beside it."""
    import mvlib.data
    env_dir, user_dir, checkout = tmp_path / "env", tmp_path / "user", tmp_path / "repo"
    for d in (env_dir / "cifar10", user_dir / "cifar10", checkout / "data" / "cifar10",
              tmp_path / "shared" / "data" / "cifar10"):
        d.mkdir(parents=True)
    config = tmp_path / "config.yaml"
    config.write_text(f"data_dir: {user_dir}\n")
    monkeypatch.setattr(mvlib.data, "USER_CONFIG", config)
    monkeypatch.setattr(mvlib.data, "CHECKOUT", checkout)
    monkeypatch.setenv("MVLIB_DATA", str(env_dir))
    assert [src for src, _ in mvlib.data.data_search_path()][:2] == ["MVLIB_DATA", str(config)]
    assert resolve_data_dir("cifar10", None) == env_dir / "cifar10"
    monkeypatch.delenv("MVLIB_DATA")
    assert resolve_data_dir("cifar10", None) == user_dir / "cifar10"
    config.unlink()
    assert resolve_data_dir("cifar10", None) == checkout / "data" / "cifar10"
    (checkout / "data" / "cifar10").rmdir()
    (checkout / "data").rmdir()
    assert resolve_data_dir("cifar10", None) == tmp_path / "shared" / "data" / "cifar10"
    assert resolve_data_dir("cifar10", env_dir) == env_dir / "cifar10"  # an explicit folder wins over all


def test_a_run_trains_on_the_data_its_identity_names_after_the_file_changed_in_the_same_process(tmp_path):
    # a notebook's kernel: load, replace the file on disk, load again -> the new data and the new identity
    from mvlib.study.config import load_profile
    from mvlib.study.experiment import data_identity, loaders
    write_split(tmp_path / "cifar10", "train.npz", n=60, seed=1)
    write_split(tmp_path / "cifar10", "test.npz", n=20, seed=2)
    cfg = load_profile("ci", {"data_dir": str(tmp_path), "val_per_class": 1, "train_per_class": 0,
                              "test_per_class": 0, "val_eval_per_class": 0, "batch_size": 4})
    first_ident, first_x = data_identity(cfg), loaders(cfg)[0].images.clone()
    new = write_split(tmp_path / "cifar10", "train.npz", n=60, seed=7)  # same shape, other pixels
    os.utime(tmp_path / "cifar10" / "train.npz", ns=(1, 1))  # a stamp no earlier write had
    ident, x = data_identity(cfg), loaders(cfg)[0].images
    assert ident["train"]["file_sha256"] != first_ident["train"]["file_sha256"]
    assert not torch.equal(x, first_x)
    assert torch.equal(x[0], torch.from_numpy(new["images"][0].transpose(2, 0, 1)))
