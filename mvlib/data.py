"""CIFAR-10 / CIFAR-100 as whole-split uint8 tensors, checked on load, batched on device.

Two sources, never mixed and never substituted for one another:

* a folder of ``.npz`` files (``train.npz`` / ``test.npz``; uint8 ``images``
  [N, 32, 32, 3] HWC RGB, int64 ``labels`` [N]) -- the format of the
  lossless offline copy (a ``shared/data/cifar10`` folder beside the checkout); the folder comes from the
  ``data_dir`` argument or, without one, from :func:`data_search_path`
  (``$MVLIB_DATA``, the per-user config, ``data/`` in the checkout or a
  ``shared/data`` folder beside it) and may be the dataset folder itself or a root holding
  ``<dataset>/``;
* torchvision's ``CIFAR10`` / ``CIFAR100`` (``download=True``), used only when
  no folder is found at all.

Anything wrong with a file (missing, truncated or corrupt zip, missing array,
wrong shape or dtype, labels out of range, image and label counts that differ)
raises :class:`DataError` naming the file and the problem: a run must never
train on data other than the data it was asked for.

:class:`BatchLoader` keeps a whole split on one device (a GPU holds CIFAR in a
few hundred MB) and does shuffling, pad-4 random crop, horizontal flip and
normalization on batches of tensors. Every random draw of an epoch comes from
a CPU generator seeded by ``(seed, epoch)``, so the batches are the same on
CPU and GPU and a resumed run sees exactly the batches it would have seen.
"""
from __future__ import annotations

import hashlib
import os
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "DataError", "DATASETS", "CIFAR_MEAN_STD", "dataset_num_classes", "resolve_data_dir",
    "inspect_npz", "load_split", "split_identity", "class_balanced_indices", "train_val_indices", "BatchLoader",
]

DATASETS = {"cifar10": 10, "cifar100": 100}

# Per-channel mean / std of the *train* split in [0, 1] pixel units, the
# constants the CIFAR literature (and ReActNet / BNN-BN code) normalizes with.
CIFAR_MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

IMAGE_SHAPE = (32, 32, 3)  # as stored: H, W, C
PAD = 4  # pad-4 random crop (He et al. 2016 CIFAR recipe)


class DataError(ValueError):
    """Missing or malformed dataset files; the message names the file and the problem."""


def dataset_num_classes(dataset: str) -> int:
    """Number of classes of ``dataset`` ("cifar10" -> 10, "cifar100" -> 100)."""
    try:
        return DATASETS[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; known: {', '.join(DATASETS)}") from None


USER_CONFIG = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "mvlib" / "config.yaml"
CHECKOUT = Path(__file__).resolve().parent.parent


def data_search_path() -> list[tuple[str, Path]]:
    """Where a data folder is looked for when none is given, in order, as ``(source, folder)``.

    1. ``$MVLIB_DATA``; 2. ``data_dir:`` in the per-user file ``~/.config/mvlib/config.yaml``;
    3. ``data/`` inside the checkout; 4. a ``shared/data`` folder beside the checkout (an
    offline copy). The first that is set (1, 2) or exists (3, 4) is used; with none, torchvision
    downloads CIFAR. ``make``, papermill, JupyterLab and plain Python all resolve it the same way.
    """
    out = []
    if os.environ.get("MVLIB_DATA"):
        out.append(("MVLIB_DATA", Path(os.environ["MVLIB_DATA"]).expanduser()))
    if USER_CONFIG.is_file():
        import yaml
        try:
            value = (yaml.safe_load(USER_CONFIG.read_text()) or {}).get("data_dir")
        except (yaml.YAMLError, AttributeError) as e:
            raise DataError(f"{USER_CONFIG}: not a YAML mapping with a data_dir entry ({e})") from None
        if value:
            out.append((str(USER_CONFIG), Path(str(value)).expanduser()))
    for folder in (CHECKOUT / "data", CHECKOUT.parent / "shared" / "data"):
        if folder.is_dir():
            out.append((f"the folder {folder.name}/ {'inside' if folder.parent == CHECKOUT else 'beside'} the checkout",
                        folder))
    return out


def resolve_data_dir(dataset: str, data_dir: str | os.PathLike | None) -> Path | None:
    """The folder holding ``dataset``'s npz files, or None (= torchvision download).

    ``data_dir`` wins; an empty string counts as not given (the
    configuration's default), and then :func:`data_search_path` decides. The
    folder is used as the dataset folder when it holds npz files itself, else
    ``<folder>/<dataset>/`` is used. A folder named after the *other* dataset
    is refused, since CIFAR-10 labels would silently pass as valid CIFAR-100
    labels.
    """
    dataset_num_classes(dataset)
    if data_dir not in (None, ""):
        source, root = "data_dir", Path(data_dir).expanduser()
    else:
        found = data_search_path()
        if not found:
            return None
        source, root = found[0]
    if not root.is_dir():
        raise DataError(f"{source} {str(root)!r} is not a folder")
    sub = root / dataset
    if sub.is_dir():
        return sub
    if any(root.glob("*.npz")):
        if root.name in DATASETS and root.name != dataset:
            raise DataError(f"{source} {str(root)!r} holds {root.name}, but {dataset} was asked for")
        return root
    raise DataError(f"{source} {str(root)!r} holds neither npz files nor a {dataset}/ subfolder")


def inspect_npz(path: str | os.PathLike) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """Shape and dtype of every array in an npz file, read from the headers only.

    Nothing is decompressed beyond each ``.npy`` header, so a 150 MB train file
    can be checked in milliseconds.
    """
    path = Path(path)
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                with zf.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                out[name.removesuffix(".npy")] = (tuple(shape), np.dtype(dtype))
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError) as e:
        raise DataError(f"{path}: not a readable npz file ({type(e).__name__}: {e})") from None
    return out


def _check_arrays(images: np.ndarray, labels: np.ndarray, num_classes: int, where: str) -> None:
    """Raise DataError unless images/labels follow the documented format."""
    if images.dtype != np.uint8:
        raise DataError(f"{where}: 'images' must be uint8, got {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise DataError(f"{where}: 'images' must have shape [N, 32, 32, 3], got {list(images.shape)}")
    if labels.dtype != np.int64:
        raise DataError(f"{where}: 'labels' must be int64, got {labels.dtype}")
    if labels.ndim != 1:
        raise DataError(f"{where}: 'labels' must have shape [N], got {list(labels.shape)}")
    if len(images) != len(labels):
        raise DataError(f"{where}: {len(images)} images but {len(labels)} labels")
    if len(labels) == 0:
        raise DataError(f"{where}: no images")
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        raise DataError(f"{where}: labels must lie in [0, {num_classes - 1}], found range [{lo}, {hi}]")


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read ``images`` and ``labels`` from one npz file (no pickle), errors as DataError."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in ("images", "labels") if k not in npz.files]
            if missing:
                raise DataError(f"{path}: missing array(s) {missing}; found {npz.files}")
            return npz["images"], npz["labels"]
    except DataError:
        raise
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError) as e:
        # Truncated zips surface as BadZipFile, EOFError or zlib/CRC errors
        # (OSError / BadZipFile) depending on where the cut is.
        raise DataError(f"{path}: truncated, corrupt or unreadable npz file ({type(e).__name__}: {e})") from None


def _read_torchvision(dataset: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Download (if needed) and read a split through torchvision."""
    import torchvision  # imported lazily: the npz path does not need it

    root = Path(os.environ.get("MVLIB_CACHE", Path.home() / ".cache" / "mvlib")).expanduser()
    cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[dataset]
    try:
        ds = cls(root=str(root), train=(split == "train"), download=True)
    except Exception as e:  # network or checksum failure: say what was tried
        raise DataError(f"torchvision {cls.__name__} download into {root} failed: {e}; "
                        f"set MVLIB_DATA or data_dir to a folder of npz files") from e
    return np.asarray(ds.data, dtype=np.uint8), np.asarray(ds.targets, dtype=np.int64)


def class_balanced_indices(labels: torch.Tensor | np.ndarray, per_class: int, num_classes: int,
                           where: str = "subset") -> np.ndarray:
    """Indices of the first ``per_class`` samples of every class, in original order.

    Raises DataError when some class has fewer than ``per_class`` samples.
    """
    labels = np.asarray(labels)
    keep = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) < per_class:
            raise DataError(f"{where}: class {c} has {len(idx)} images, fewer than per_class={per_class}")
        keep.append(idx[:per_class])
    return np.sort(np.concatenate(keep))


def train_val_indices(labels: torch.Tensor | np.ndarray, val_per_class: int, num_classes: int,
                      where: str = "train split") -> tuple[np.ndarray, np.ndarray]:
    """``(train, validation)`` indices of a train file: validation = the *last* ``val_per_class`` images of each class.

    The rule depends on the file alone (its order and labels), so every run of
    every profile holds out the same images; the train subsets
    (``per_class``) then take the *first* images of each class among the
    rest, so a larger subset never reaches into the validation split. CIFAR's
    train files are in random order, so the last images of a class are a
    random sample of it. Raises DataError when a class has no image left for
    training.
    """
    labels = np.asarray(labels)
    if val_per_class < 0:
        raise ValueError(f"val_per_class must be >= 0, got {val_per_class}")
    val = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= val_per_class:
            raise DataError(f"{where}: class {c} has {len(idx)} images, too few to hold out "
                            f"val_per_class={val_per_class} and train on the rest")
        val.append(idx[len(idx) - val_per_class:])
    val_idx = np.sort(np.concatenate(val)) if val_per_class else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def _sha256(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(np.ascontiguousarray(a).data)
    return h.hexdigest()


def _read_source(dataset: str, file_name: str, folder: str | None) -> tuple[np.ndarray, np.ndarray, str, str]:
    """``(images, labels, where, sha256)`` of one split file (or torchvision split), checked; cached per process.

    The cache key includes the file's size and modification time, so a file
    replaced in place (a fixed download, another copy) is read again.
    """
    if folder is None:
        return _read_cached(dataset, file_name, None, None)
    path = Path(folder) / file_name
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    return _read_cached(dataset, file_name, str(folder), (st.st_size, st.st_mtime_ns))


@lru_cache(maxsize=4)
def _read_cached(dataset: str, file_name: str, folder: str | None, stamp) -> tuple[np.ndarray, np.ndarray, str, str]:
    num_classes = dataset_num_classes(dataset)
    if folder is None:
        split = "test" if file_name == "test.npz" else "train"
        where = f"torchvision {dataset} {split}"
        images, labels = _read_torchvision(dataset, split)
    else:
        path = Path(folder) / file_name
        where = str(path)
        images, labels = _read_npz(path)
    _check_arrays(images, labels, num_classes, where)
    # the identity of the data is its content, whatever file or download it came from
    return images, labels, where, _sha256(images, labels)


def _select(dataset: str, split: str, data_dir, train_file: str, per_class: int, val_per_class: int):
    """Resolve a split to ``(images, labels, indices or None, where, file sha256)`` (arguments checked)."""
    num_classes = dataset_num_classes(dataset)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if per_class < 0:
        raise ValueError(f"per_class must be >= 0, got {per_class}")
    folder = resolve_data_dir(dataset, data_dir)
    file_name = "test.npz" if split == "test" else train_file
    if folder is None and file_name not in ("train.npz", "test.npz"):
        raise DataError(f"train_file={train_file!r} needs a data folder; torchvision only has the full "
                        f"train split (use per_class for a subset)")
    images, labels, where, sha = _read_source(dataset, file_name, None if folder is None else str(folder))
    if split == "test":
        idx = class_balanced_indices(labels, per_class, num_classes, where) if per_class else None
    else:
        train_idx, val_idx = train_val_indices(labels, val_per_class, num_classes, where)
        if split == "val":
            if not val_per_class:
                raise ValueError("the validation split needs val_per_class >= 1")
            idx = val_idx if not per_class else val_idx[class_balanced_indices(labels[val_idx], per_class,
                                                                                 num_classes, where)]
        else:
            idx = train_idx if not per_class else train_idx[class_balanced_indices(labels[train_idx], per_class,
                                                                                     num_classes, where)]
            if not val_per_class and not per_class:
                idx = None
    return images, labels, idx, where, sha


def load_split(dataset: str, split: str, data_dir: str | os.PathLike | None = None,
               train_file: str = "train.npz", per_class: int = 0,
               val_per_class: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Load one split as ``(images uint8 [N, 3, 32, 32], labels int64 [N])`` CPU tensors.

    ``split`` is "train" or "val" (both from ``train_file``) or "test"
    (``test.npz``). ``val_per_class`` holds out the validation split
    (:func:`train_val_indices`: the last images of each class): "train" never
    contains it, "val" is exactly it. ``per_class > 0`` keeps the first
    ``per_class`` images of each class of the split, in their original
    relative order. With no folder (argument or ``$MVLIB_DATA``) the split
    comes from torchvision, cached under ``$MVLIB_CACHE`` (default
    ``~/.cache/mvlib``).
    """
    images, labels, idx, _, _ = _select(dataset, split, data_dir, train_file, per_class, val_per_class)
    if idx is not None:
        images, labels = images[idx], labels[idx]
    # HWC -> CHW once here, so batches need no layout work later.
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
    return x, torch.from_numpy(np.ascontiguousarray(labels))


def split_identity(dataset: str, split: str, data_dir: str | os.PathLike | None = None,
                   train_file: str = "train.npz", per_class: int = 0, val_per_class: int = 0) -> dict:
    """What a split *is*, for run identities and records: source file, content hash, membership.

    ``file_sha256`` hashes the file's arrays (the same for an npz copy and the
    torchvision download of the same data); ``indices_sha256`` hashes the
    member indices (all of the file when None), so a run trained on other
    data or another split is never taken for this one.
    """
    images, labels, idx, where, sha = _select(dataset, split, data_dir, train_file, per_class, val_per_class)
    members = np.arange(len(labels)) if idx is None else np.asarray(idx, dtype=np.int64)
    return {"dataset": dataset, "split": split, "file": Path(where).name if not where.startswith("torchvision")
            else where, "file_sha256": sha, "images": int(len(members)),
            "per_class": per_class, "val_per_class": val_per_class,
            "indices_sha256": hashlib.sha256(members.astype(np.int64).tobytes()).hexdigest()}


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed derived from (seed, epoch); independent streams per epoch."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class BatchLoader:
    """Normalized float batches ``(x [B, 3, 32, 32], y [B])`` from a whole split on ``device``.

    ``train=True`` shuffles (a new permutation per epoch); ``augment=True``
    applies a pad-4 random crop and a horizontal flip with p = 0.5 to each
    image. As in torchvision's ``RandomCrop(32, padding=4)`` (applied before
    ``Normalize``), the padding is black: pixel value 0, i.e. ``-mean/std``
    after normalization. All random draws of epoch ``e`` come from a CPU
    generator seeded by ``(seed, e)``: call :meth:`set_epoch` before iterating
    so that each epoch differs and a resumed run repeats the same batches.
    ``drop_last`` defaults to ``train`` (a last short batch would make
    BatchNorm statistics noisy). ``dataset`` picks the normalization constants.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, train: bool,
                 augment: bool, device: str | torch.device = "cpu", seed: int = 0,
                 drop_last: bool | None = None, dataset: str = "cifar10"):
        if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (3, 32, 32):
            raise ValueError(f"images must be uint8 [N, 3, 32, 32], got {images.dtype} {list(images.shape)}")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ValueError(f"labels must be [N] with N = {len(images)}, got {list(labels.shape)}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = int(batch_size)
        self.train, self.augment, self.seed = bool(train), bool(augment), int(seed)
        self.drop_last = self.train if drop_last is None else bool(drop_last)
        self.epoch = 0
        mean, std = CIFAR_MEAN_STD[dataset]
        # (x/255 - mean)/std folded into one multiply-add per element.
        std_t = torch.tensor(std, dtype=torch.float32)
        self._scale = (1.0 / (255.0 * std_t)).view(1, 3, 1, 1).to(self.device)
        self._shift = (-torch.tensor(mean, dtype=torch.float32) / std_t).view(1, 3, 1, 1).to(self.device)
        if len(self) == 0:
            raise ValueError(f"{len(images)} images give no batch of {batch_size} with drop_last=True")

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose permutation and augmentation the next iteration uses."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        n, b = len(self.images), self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def _draws(self) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Permutation, crop offsets [N, 2] in 0..2*PAD and flip flags [N] for this epoch."""
        n = len(self.images)
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=g) if self.train else torch.arange(n)
        offsets = flips = None
        if self.augment:
            offsets = torch.randint(0, 2 * PAD + 1, (n, 2), generator=g)
            flips = torch.rand(n, generator=g) < 0.5
        return order, offsets, flips

    def _augment(self, x: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Pad-4 crop and optional flip of a uint8 batch in one gather (no per-image loop)."""
        b = x.shape[0]
        padded = F.pad(x, (PAD, PAD, PAD, PAD))  # zeros = black pixels
        ar = torch.arange(32, device=x.device)
        rows = offsets[:, 0:1] + ar  # [B, 32]
        # A flipped image reads its crop window right to left.
        cols = torch.where(flips[:, None], offsets[:, 1:2] + 31 - ar, offsets[:, 1:2] + ar)
        bi = torch.arange(b, device=x.device)[:, None, None]
        # Advanced indices around a slice: result is [B, 32, 32, C].
        out = padded[bi, :, rows[:, :, None], cols[:, None, :]]
        return out.permute(0, 3, 1, 2)

    def __iter__(self):
        order, offsets, flips = self._draws()
        n, b = len(order), self.batch_size
        for i in range(len(self)):
            idx = order[i * b:min(n, (i + 1) * b)]
            idx_dev = idx.to(self.device)
            x = self.images.index_select(0, idx_dev)
            if self.augment:
                x = self._augment(x, offsets[idx].to(self.device), flips[idx].to(self.device))
            x = x.float().mul_(self._scale).add_(self._shift).contiguous()
            yield x, self.labels.index_select(0, idx_dev)
