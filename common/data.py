"""Real-example datasets, loaded once into host memory, no network access.

* ``gaussian``: d2l's ``N(0,1)^(n x 2) @ A + b``, drawn from the run seed.
* ``shapes``: procedurally drawn discs, squares and triangles (the former offline default).
* ``glyphs``: procedurally drawn handwritten-like digits 0-9 with labels (``glyphs.py``).
* ``idx``: MNIST / FashionMNIST IDX image files, ``.gz`` or raw, with their labels.
* ``image_folder``: jpg/png files, resized and centre-cropped like the tutorial.

Images are kept as uint8 ``(N, C, H, W)`` and mapped to float64 in [-1, 1] per
batch exactly as ``ToTensor()`` + ``Normalize(0.5, 0.5)`` do: ``(u/255 - 0.5)/0.5``.
"""

from __future__ import annotations

import functools
import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import GanSuiteError
from .spec import DataSpec

STREAM_DATA = 2
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


@dataclass
class Dataset:
    """``n`` examples; ``get(indices)`` returns float64 in the canonical layout."""

    values: np.ndarray  # float64 (gaussian) or uint8 NCHW (images)
    description: str
    labels: np.ndarray | None = None  # int64 class per example, where the data has them (IDX)

    @property
    def n(self) -> int:
        return int(self.values.shape[0])

    def get(self, indices: np.ndarray) -> np.ndarray:
        batch = self.values[indices]
        if batch.dtype == np.uint8:
            return (batch.astype(np.float64) / 255.0 - 0.5) / 0.5
        return batch.astype(np.float64, copy=True)


def load_dataset(data: DataSpec, seed: int) -> Dataset:
    if data.kind in GENERATED_KINDS:
        return _generated(data, int(seed))
    if data.kind == "idx":
        return idx_data(data)
    return image_folder_data(data)


GENERATED_KINDS = ("gaussian", "shapes", "glyphs")


@functools.lru_cache(maxsize=4)
def _generated(data: DataSpec, seed: int) -> Dataset:
    """Drawn data depends on (spec, seed) only: drawn once per process (10,000 glyphs at 64x64
    take seconds, and tests build many Streams on one preset). Nothing writes to ``values``."""
    if data.kind == "gaussian":
        out = gaussian_data(data, seed)
    elif data.kind == "shapes":
        out = shapes_data(data, seed)
    else:
        from .glyphs import glyph_data  # lazy: glyphs.py imports Dataset from here

        out = glyph_data(data, seed)
    out.values.setflags(write=False)
    return out


def gaussian_data(data: DataSpec, seed: int) -> Dataset:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), STREAM_DATA])))
    A = np.asarray(data.gaussian_A, dtype=np.float64)
    b = np.asarray(data.gaussian_b, dtype=np.float64)
    x = rng.normal(0.0, 1.0, size=(data.n_examples, 2)) @ A + b
    return Dataset(x, f"gaussian N(0,1)@A+b, n={data.n_examples}")


def gaussian_truth(data: DataSpec) -> tuple[np.ndarray, np.ndarray]:
    """The true mean and covariance of the Gaussian data: ``b`` and ``A^T A``."""
    A = np.asarray(data.gaussian_A, dtype=np.float64)
    return np.asarray(data.gaussian_b, dtype=np.float64), A.T @ A


# ---------------------------------------------------------------------------
# procedural shapes


def shapes_data(data: DataSpec, seed: int) -> Dataset:
    """Coloured discs, squares and triangles on a dark background (deterministic)."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), STREAM_DATA])))
    s = data.image_size
    yy, xx = np.mgrid[0:s, 0:s].astype(np.float64) + 0.5
    out = np.empty((data.n_examples, data.channels, s, s), dtype=np.uint8)
    for i in range(data.n_examples):
        background = rng.uniform(0, 60, size=3)
        colour = rng.uniform(120, 255, size=3)
        img = np.broadcast_to(background[:, None, None], (3, s, s)).copy()
        for _ in range(int(rng.integers(1, 3))):
            cx, cy = rng.uniform(0.25 * s, 0.75 * s, size=2)
            r = rng.uniform(0.12 * s, 0.3 * s)
            kind = int(rng.integers(0, 3))
            if kind == 0:  # disc
                mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
            elif kind == 1:  # axis-aligned square
                mask = (np.abs(xx - cx) <= r * 0.8) & (np.abs(yy - cy) <= r * 0.8)
            else:  # upward triangle
                mask = (yy <= cy + r * 0.8) & (yy >= cy - r) & (np.abs(xx - cx) <= (yy - (cy - r)) * 0.6)
            img[:, mask] = colour[:, None]
            colour = np.clip(colour[::-1] * rng.uniform(0.7, 1.0), 0, 255)
        if data.channels == 1:
            img = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
        out[i] = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return Dataset(out, f"procedural shapes {data.channels}x{s}x{s}, n={data.n_examples}")


# ---------------------------------------------------------------------------
# files


def _resize_center_crop(img, size: int):
    """torchvision ``Resize(size)`` (shorter side, bilinear) then ``CenterCrop(size)``."""
    from PIL import Image

    w, h = img.size
    if w <= h:
        nw, nh = size, max(size, int(size * h / w))
    else:
        nw, nh = max(size, int(size * w / h)), size
    if (nw, nh) != (w, h):
        img = img.resize((nw, nh), Image.BILINEAR)
    left = int(round((nw - size) / 2.0))
    top = int(round((nh - size) / 2.0))
    return img.crop((left, top, left + size, top + size))


def _check_dir(path: Path, what: str) -> None:
    if not path.exists():
        raise GanSuiteError(f"data.path: {str(path)!r} does not exist ({what})")


def _read_idx(path: Path, rank: int) -> np.ndarray:
    """An IDX ubyte file of ``rank`` dimensions (magic 0x0000080<rank>) as uint8."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise GanSuiteError(f"data.path: cannot read IDX file {str(path)!r} ({err})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08 or raw[3] != rank:
        magic = raw[:4].hex() if len(raw) >= 4 else raw.hex()
        what = "image" if rank == 3 else "label"
        raise GanSuiteError(f"data.path: {str(path)!r} is not an IDX{rank} ubyte {what} file "
                            f"(magic {magic}, expected 0000080{rank})")
    dims = np.frombuffer(raw[4:4 + 4 * rank], dtype=">u4").astype(int)
    expected = 4 + 4 * rank + int(np.prod(dims))
    if len(raw) < expected:
        raise GanSuiteError(f"data.path: IDX file {str(path)!r} is truncated ({len(raw)} of {expected} bytes)")
    return np.frombuffer(raw, dtype=np.uint8, count=int(np.prod(dims)), offset=4 + 4 * rank).reshape(dims)


def read_idx_images(path: Path) -> np.ndarray:
    """An IDX3 ubyte image file (magic 0x00000803) as uint8 ``(N, H, W)``."""
    return _read_idx(path, 3)


def read_idx_labels(path: Path) -> np.ndarray:
    """An IDX1 ubyte label file (magic 0x00000801) as int64 ``(N,)``."""
    return _read_idx(path, 1).astype(np.int64)


#: File-name prefix of each split (MNIST's and FashionMNIST's, as torchvision's raw/ keeps them).
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}


def _idx_file(folder: Path, prefix: str, kind: str) -> Path | None:
    """``<prefix>-<kind>-idx?-ubyte``, raw preferred over ``.gz`` when both are there (same data)."""
    found = sorted(folder.glob(f"{prefix}-{kind}-idx?-ubyte*"), key=lambda p: (p.suffix == ".gz", p.name))
    return found[0] if found else None


def idx_files(path: Path, split: str) -> tuple[Path, Path | None]:
    """(images, labels or None) for ``split``: a file is used as given (labels beside it if named alike)."""
    _check_dir(path, "expected an IDX image file or a folder holding *images-idx3-ubyte[.gz]")
    if path.is_file():
        stem = path.name.split("-images-")[0] if "-images-" in path.name else None
        return path, (_idx_file(path.parent, stem, "labels") if stem else None)
    images = _idx_file(path, _SPLIT_PREFIX[split], "images")
    if images is None:
        have = [s for s, p in _SPLIT_PREFIX.items() if _idx_file(path, p, "images")]
        if not have:
            raise GanSuiteError(f"data.path: no '*images-idx3-ubyte[.gz]' file in {str(path)!r}")
        raise GanSuiteError(f"data.split: {str(path)!r} has no {split!r} split ({_SPLIT_PREFIX[split]}-images-*); "
                            f"it holds: {', '.join(have)}")
    return images, _idx_file(path, _SPLIT_PREFIX[split], "labels")


def idx_data(data: DataSpec) -> Dataset:
    from PIL import Image

    images_file, labels_file = idx_files(Path(data.path), data.split)
    raw = read_idx_images(images_file)
    labels = read_idx_labels(labels_file) if labels_file is not None else None
    if labels is not None and len(labels) != len(raw):
        raise GanSuiteError(f"data.path: {labels_file.name} has {len(labels)} labels for {len(raw)} images")
    s = data.image_size
    out = np.empty((raw.shape[0], 1, s, s), dtype=np.uint8)
    for i, img in enumerate(raw):
        out[i, 0] = np.asarray(_resize_center_crop(Image.fromarray(img, mode="L"), s))
    if data.channels == 3:
        out = np.repeat(out, 3, axis=1)
    return Dataset(out, f"IDX images {images_file} ({raw.shape[1]}x{raw.shape[2]} -> {s}x{s}), n={len(out)}"
                        f"{', labels ' + labels_file.name if labels_file is not None else ''}", labels)


def image_folder_data(data: DataSpec) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    path = Path(data.path)
    _check_dir(path, "expected a folder of jpg/png images")
    if not path.is_dir():
        raise GanSuiteError(f"data.path: {str(path)!r} is not a folder")
    files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise GanSuiteError(f"data.path: no images ({', '.join(IMAGE_SUFFIXES)}) under {str(path)!r}")
    s, mode = data.image_size, ("RGB" if data.channels == 3 else "L")
    out = np.empty((len(files), data.channels, s, s), dtype=np.uint8)
    for i, f in enumerate(files):
        try:
            with Image.open(f) as img:
                arr = np.asarray(_resize_center_crop(img.convert(mode), s))
        except (UnidentifiedImageError, OSError, SyntaxError) as err:
            raise GanSuiteError(f"data.path: cannot decode image {os.fspath(f)!r} ({type(err).__name__})") from None
        out[i] = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return Dataset(out, f"image folder {path} -> {data.channels}x{s}x{s}, n={len(files)}")
