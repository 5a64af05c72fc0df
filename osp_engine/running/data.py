"""Datasets: a registry of loaders that return train/val batch iterables on the training device.

Small sets (digits, CIFAR, synthetic) live as uint8/float tensors on the device; each epoch draws a
random permutation and applies batched random crop (zero padding) and flip, with no DataLoader
workers. ImageFolder trees (ImageNet, custom) use torchvision's DataLoader pipeline.
"""
from __future__ import annotations

import gzip
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from ..method.config import Config, ConfigError

Batch = tuple[torch.Tensor, torch.Tensor]  # images (N, C, H, W) float, labels (N,) int64


@dataclass(frozen=True)
class DatasetInfo:
    num_classes: int
    image_size: int
    in_channels: int
    label: str
    image_height: int = 0            # 0: square images, image_size x image_size

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return (self.in_channels, self.image_height or self.image_size, self.image_size)


class TensorLoader:
    """Batches from resident tensors. images: (N, C, H, W) float32 normalised; labels: (N,) int64.

    With `train=True` every pass shuffles and augments: a random shift of up to `pad` pixels
    (zero-padded crop) and, if `flip`, a horizontal flip of half the images, all in one batched op.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, batch_size: int, train: bool,
                 pad: int = 0, flip: bool = False, seed: int = 0) -> None:
        self.images, self.labels = images, labels
        self.batch_size, self.train, self.pad, self.flip = batch_size, train, pad, flip
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.rank, self.world_size = 0, 1                # a training shard: see shard()

    def __len__(self) -> int:
        return (len(self.labels) + self.batch_size - 1) // self.batch_size

    def to(self, device: torch.device) -> "TensorLoader":
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        return self

    def shard(self, rank: int, world_size: int) -> "TensorLoader":
        """Under torchrun: every rank draws the same permutation and the same augmentation of each
        global batch of `batch_size` images and keeps every world_size-th image from position `rank`,
        so the ranks' shards partition each batch, the random states stay equal on every rank, and the
        LR schedule counts the same iterations as one process."""
        self.rank, self.world_size = rank, world_size
        return self

    def _draw(self, n: int, g: torch.Generator) -> tuple:
        """The random shift (dy, dx) and flip of n images, in the order one process has always drawn them."""
        dy = dx = flip = None
        if self.pad:
            dy = torch.randint(0, 2 * self.pad + 1, (n,), generator=g)
            dx = torch.randint(0, 2 * self.pad + 1, (n,), generator=g)
        if self.flip:
            flip = torch.rand(n, generator=g) < 0.5
        return dy, dx, flip

    def _augment(self, x: torch.Tensor, dy, dx, flip) -> torch.Tensor:
        n, _, h, w = x.shape
        if dy is not None:
            p = self.pad
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            # one (dy, dx) per image, gathered with index arithmetic instead of a Python loop
            dy, dx = dy.to(x.device), dx.to(x.device)
            rows = (dy[:, None] + torch.arange(h, device=x.device)[None, :])          # (n, h)
            cols = (dx[:, None] + torch.arange(w, device=x.device)[None, :])          # (n, w)
            idx_n = torch.arange(n, device=x.device)[:, None, None]
            x = padded.permute(0, 2, 3, 1)[idx_n, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
        if flip is not None:
            x = torch.where(flip.to(x.device)[:, None, None, None], x.flip(3), x)
        return x.contiguous()

    def __iter__(self) -> Iterator[Batch]:
        n = len(self.labels)
        order = torch.randperm(n, generator=self.generator).to(self.labels.device) if self.train \
            else torch.arange(n, device=self.labels.device)
        part = slice(self.rank, None, self.world_size) if self.train else slice(None)
        for start in range(0, n, self.batch_size):
            idx = order[start:start + self.batch_size]
            draws = self._draw(len(idx), self.generator) if self.train else None
            if len(idx) < self.world_size:               # a rank would get no image: skipped by every rank
                continue
            x, y = self.images[idx[part]], self.labels[idx[part]]
            if self.train:
                x = self._augment(x, *(d if d is None else d[part] for d in draws))
            yield x, y


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 1,797 8x8 digits, read from the file the package ships: images (1797, 8, 8)
    float32 in [0, 1] (0 = background) and labels (1797,) int64. The file is read directly because
    importing scikit-learn (and SciPy with it) takes longer than the whole first demo epoch."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the digits demo needs scikit-learn's bundled data: pip install scikit-learn")
    path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.csv.gz"
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)       # (1797, 65): 64 pixels 0..16, label
    return (table[:, :64] / 16.0).reshape(-1, 8, 8), table[:, 64].astype(np.int64)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: each class shuffled with `seed` and its first round(fraction * n) to val."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        val.append(members[:round(val_fraction * len(members))])
    val_idx = np.sort(np.concatenate(val))
    return np.setdiff1d(np.arange(len(labels)), val_idx), val_idx


NOISE_SIGMA = 0.5                  # digits-noisy: the standard deviation of its fixed noise, in pixel range units


def noisy(images: np.ndarray) -> np.ndarray:
    """The digits made harder, the same way for every run: each image plus its own fixed Gaussian noise
    (sigma NOISE_SIGMA of the [0, 1] pixel range, drawn once with seed 0; not clipped)."""
    noise = np.random.default_rng(0).normal(0.0, NOISE_SIGMA, images.shape).astype(np.float32)
    return images + noise


def _digits(cfg: Config) -> tuple[TensorLoader, TensorLoader, DatasetInfo]:
    """The digits with a fixed stratified 80/20 split (seed 0, whatever the run's seed); digits-noisy:
    the same images and split with fixed Gaussian noise added (`noisy`)."""
    images, labels = digits_arrays()
    if cfg.dataset == "digits-noisy":
        images = noisy(images)
    tr, va = stratified_split(labels, 0.2, seed=0)
    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).unsqueeze(1)     # (N, 1, 8, 8)
    train = TensorLoader(t(images[tr]), torch.from_numpy(labels[tr]), cfg.batch_size, True, pad=1, seed=cfg.seed)
    val = TensorLoader(t(images[va]), torch.from_numpy(labels[va]), 512, False)
    what = "digits" if cfg.dataset == "digits" else f"digits + fixed Gaussian noise (sigma {NOISE_SIGMA}), a transformed set"
    return train, val, DatasetInfo(10, 8, 1, f"{what} (scikit-learn, {len(tr):,} train / {len(va):,} val)")


_CIFAR_FILES = {
    "cifar10": ("cifar-10-batches-py", ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                                        "data_batch_5", "test_batch", "batches.meta"]),
    "cifar100": ("cifar-100-python", ["train", "test", "meta"]),
}
_CIFAR_STATS = {"cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
                "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))}


def check_cifar_root(name: str, root: str) -> None:
    """ConfigError naming the missing files and the fix, unless `root` holds the torchvision layout."""
    folder, files = _CIFAR_FILES[name]
    if not root:
        raise ConfigError(f"{name} needs data_root: --set data_root=DIR (a folder holding {folder}/), "
                          f"or add --set download=true to fetch it there")
    missing = [f for f in files if not os.path.isfile(os.path.join(root, folder, f))]
    if missing:
        raise ConfigError(f"{name} not found under {root!r}: missing {folder}/{', '.join(missing)}; "
                          f"point data_root at the folder holding {folder}/ or add --set download=true")


def _cifar(cfg: Config) -> tuple[TensorLoader, TensorLoader, DatasetInfo]:
    import torchvision

    cls = torchvision.datasets.CIFAR10 if cfg.dataset == "cifar10" else torchvision.datasets.CIFAR100
    if cfg.download:
        os.makedirs(cfg.data_root, exist_ok=True)
        cls(cfg.data_root, train=True, download=True)
    check_cifar_root(cfg.dataset, cfg.data_root)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in _CIFAR_STATS[cfg.dataset])

    def tensors(train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        ds = cls(cfg.data_root, train=train, download=False)
        x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float().div_(255)   # (N, 3, 32, 32)
        return (x - mean) / std, torch.tensor(ds.targets, dtype=torch.long)

    xtr, ytr = tensors(True)
    xva, yva = tensors(False)
    nc = 10 if cfg.dataset == "cifar10" else 100
    return (TensorLoader(xtr, ytr, cfg.batch_size, True, pad=4, flip=True, seed=cfg.seed),
            TensorLoader(xva, yva, 1000, False), DatasetInfo(nc, 32, 3, cfg.dataset))


def _synthetic(cfg: Config) -> tuple[TensorLoader, TensorLoader, DatasetInfo]:
    """SYNTHETIC random CIFAR-shaped images with random labels: for throughput benchmarks only."""
    g = torch.Generator().manual_seed(cfg.seed)
    n = cfg.synthetic_size
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    nv = max(n // 10, 1)
    return (TensorLoader(x, y, cfg.batch_size, True, pad=4, flip=True, seed=cfg.seed),
            TensorLoader(x[:nv].clone(), y[:nv].clone(), 1000, False),
            DatasetInfo(10, 32, 3, "SYNTHETIC random CIFAR-shaped data (throughput only)"))


def check_image_folder(root: str) -> None:
    if not root:
        raise ConfigError("an ImageFolder dataset needs data_root: --set data_root=DIR with DIR/train and DIR/val")
    for split in ("train", "val"):
        path = os.path.join(root, split)
        if not os.path.isdir(path) or not any(os.scandir(path)):
            raise ConfigError(f"{path!r} is missing or empty: data_root must hold train/ and val/, "
                              f"one sub-folder of images per class")


def _image_folder(cfg: Config):
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    check_image_folder(cfg.data_root)
    norm = T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    tr = ImageFolder(os.path.join(cfg.data_root, "train"),
                     T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), norm]))
    va = ImageFolder(os.path.join(cfg.data_root, "val"),
                     T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), norm]))
    if tr.classes != va.classes:
        raise ConfigError(f"train/ and val/ under {cfg.data_root!r} hold different class folders")
    def loader(ds, shuffle: bool):
        return torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=shuffle,
                                           num_workers=cfg.num_workers, pin_memory=True, drop_last=shuffle)
    return loader(tr, True), loader(va, False), DatasetInfo(len(tr.classes), 224, 3, f"ImageFolder {cfg.data_root}")


DATASETS: dict[str, Callable[[Config], tuple]] = {
    "digits": _digits,
    "digits-noisy": _digits,
    "cifar10": _cifar,
    "cifar100": _cifar,
    "imagenet": _image_folder,
    "folder": _image_folder,
    "synthetic-cifar10": _synthetic,
}


def check_dataset(cfg: Config) -> None:
    """Cheap existence checks before a run folder is made (ConfigError on a missing dataset)."""
    if cfg.dataset in _CIFAR_FILES and not cfg.download:
        check_cifar_root(cfg.dataset, cfg.data_root)
    elif cfg.dataset in ("imagenet", "folder"):
        check_image_folder(cfg.data_root)


def load_dataset(cfg: Config):
    """(train, val, DatasetInfo) for the config's dataset."""
    return DATASETS[cfg.dataset](cfg)
