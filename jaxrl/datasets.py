"""Image classification datasets: scikit-learn's digits, MNIST, Fashion-MNIST and Kuzushiji-MNIST.

Every loader returns the same `ImageDataset` (train/test arrays, class names, image shape), so an experiment
can switch datasets with one flag. `load_digits` is bundled with scikit-learn and works offline; the other
three read the official files from a cache directory and download them when they are missing.

Where the files live (first match wins):
  1. the `data_dir` argument (`jaxrl mlp --data-dir D`),
  2. the environment variable `JAXRL_DATA_DIR`,
  3. `~/.cache/jaxrl/datasets`.
Each dataset uses the sub-folder named after it (`<data_dir>/mnist`, `<data_dir>/fashion_mnist`,
`<data_dir>/kmnist`); files put directly in `<data_dir>` are found too.

Sources and checksums:
  * MNIST: the IDX-gz files of LeCun, Cortes & Burges, from PyTorch's S3 mirror (the original site answers
    403 to scripts), md5 as published by torchvision.
  * Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017): zalandoresearch's IDX-gz files, md5 as in its README.
    Debian ships the same files, re-gzipped, in the package `dataset-fashion-mnist`
    (`--data-dir /usr/share/datasets/fashion-mnist`).
  * For MNIST and Fashion-MNIST the md5 of the uncompressed IDX bytes is known too, so a re-compressed copy
    or an uncompressed file (`train-images-idx3-ubyte`) put in the folder by hand is verified and accepted.
  * Kuzushiji-MNIST (Clanuwat et al., 2018, "Deep Learning for Classical Japanese Literature"): ROIS-CODH's
    IDX-gz files, md5 as published by torchvision. ROIS-CODH's (and Kaggle's) `kmnist-*-imgs.npz` /
    `kmnist-*-labels.npz` copies, arrays under the key `arr_0`, are read when they are in the folder; no
    checksum is published for them, so they are checked for shape, dtype and label range instead.
  * OpenML (`source="openml"`, through `sklearn.datasets.fetch_openml`): `mnist_784`, `Fashion-MNIST`,
    `Kuzushiji-MNIST`; the first 60,000 rows are the training set and the last 10,000 the test set, as in the
    original files.

Downloads are atomic: bytes go to a temporary file in the destination folder, the checksum is verified, and
only then is the file moved into place with `os.replace`. An interrupted or corrupt download leaves nothing
behind under the final name.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

import numpy as np

__all__ = [
    "DATA_DIR_ENV",
    "DATASET_NAMES",
    "DatasetError",
    "DatasetNotFoundError",
    "ChecksumError",
    "ImageDataset",
    "RemoteFile",
    "ImageDatasetSpec",
    "KMNIST_CLASS_MAP",
    "MNIST_SPEC",
    "FASHION_MNIST_SPEC",
    "KMNIST_SPEC",
    "get_data_dir",
    "file_md5",
    "download_file",
    "read_idx",
    "read_npz",
    "load_dataset",
    "load_digits",
    "load_mnist",
    "load_fashion_mnist",
    "load_kmnist",
    "load_image_dataset",
]

DATA_DIR_ENV = "JAXRL_DATA_DIR"
DEFAULT_DATA_DIR = Path("~/.cache/jaxrl/datasets")


# ----------------------------------------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------------------------------------
class DatasetError(ValueError):
    """A dataset file exists but cannot be used (corrupt, wrong format, wrong checksum, wrong shape)."""


class ChecksumError(DatasetError):
    """A file's md5 differs from the published one."""


class DatasetNotFoundError(FileNotFoundError):
    """Files are missing and could not be downloaded; the message says which, from where, and where to put them."""


# ----------------------------------------------------------------------------------------------------------
# Data types
# ----------------------------------------------------------------------------------------------------------
class ImageDataset(NamedTuple):
    """A train/test split of labelled images, as every loader returns it.

    Images are `uint8` in `[0, pixel_max]` unless `scale=True` was asked (then `float32` in `[0, 1]`), and
    `[N, H, W]` unless `flatten=True` was asked (then `[N, H * W]`).
    """

    name: str                      # "digits", "mnist", "fashion_mnist", "kmnist"
    x_train: np.ndarray            # [N_train, H, W] or [N_train, H*W]
    y_train: np.ndarray            # [N_train] int64 class index
    x_test: np.ndarray             # [N_test, H, W] or [N_test, H*W]
    y_test: np.ndarray             # [N_test] int64 class index
    class_names: tuple[str, ...]   # [n_classes] printable (ASCII) name of each class index
    image_shape: tuple[int, int]   # (H, W): (8, 8) for digits, (28, 28) otherwise
    pixel_max: float               # largest raw pixel value: 16 for digits, 255 otherwise

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


class RemoteFile(NamedTuple):
    """One published file: its name on disk, where to download it, and its published md5."""

    filename: str
    urls: tuple[str, ...]          # official location first, then mirrors
    md5: str | None                # None: no published checksum (then contents are checked instead)
    raw_md5: str | None = None     # md5 of the uncompressed IDX bytes, where published (accepts re-gzipped copies)


class ImageDatasetSpec(NamedTuple):
    """Everything needed to find, download and read one MNIST-format dataset."""

    name: str                               # sub-folder of the data directory
    title: str                              # for messages
    train_images: RemoteFile                # IDX-gz, magic 0x00000803
    train_labels: RemoteFile                # IDX-gz, magic 0x00000801
    test_images: RemoteFile
    test_labels: RemoteFile
    class_names: tuple[str, ...]
    npz_files: tuple[str, str, str, str] | None = None   # hand-placed npz copies (train imgs/labels, test imgs/labels)
    npz_hint: str = ""                      # where such copies can be found
    openml_name: str | None = None          # `fetch_openml(name=...)`
    image_shape: tuple[int, int] = (28, 28)

    @property
    def idx_files(self) -> tuple[RemoteFile, RemoteFile, RemoteFile, RemoteFile]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)


def _remote(filename: str, md5: str | None, raw_md5: str | None, *base_urls: str) -> RemoteFile:
    return RemoteFile(filename, tuple(base + filename for base in base_urls), md5, raw_md5)


_MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
MNIST_SPEC = ImageDatasetSpec(
    name="mnist",
    title="MNIST",
    train_images=_remote("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                         "6bbc9ace898e44ae57da46a324031adb", *_MNIST_MIRRORS),
    train_labels=_remote("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
                         "a25bea736e30d166cdddb491f175f624", *_MNIST_MIRRORS),
    test_images=_remote("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
                         "2646ac647ad5339dbf082846283269ea", *_MNIST_MIRRORS),
    test_labels=_remote("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
                         "27ae3e4e09519cfbb04c329615203637", *_MNIST_MIRRORS),
    class_names=tuple(str(digit) for digit in range(10)),
    openml_name="mnist_784",
)

_FASHION_MIRRORS = (
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
)
FASHION_MNIST_SPEC = ImageDatasetSpec(
    name="fashion_mnist",
    title="Fashion-MNIST",
    train_images=_remote("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
                         "f4a8712d7a061bf5bd6d2ca38dc4d50a", *_FASHION_MIRRORS),
    train_labels=_remote("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe",
                         "9018921c3c673c538a1fc5bad174d6f9", *_FASHION_MIRRORS),
    test_images=_remote("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79",
                         "8181f5470baa50b63fa0f6fddb340f0a", *_FASHION_MIRRORS),
    test_labels=_remote("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310",
                         "15d484375f8d13e6eb1aabb0c3f46965", *_FASHION_MIRRORS),
    class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
    openml_name="Fashion-MNIST",
)

# KMNIST's class map (rois-codh/kmnist, kmnist_classmap.csv): index -> (Unicode code point, hiragana, romanization).
KMNIST_CLASS_MAP: tuple[tuple[str, str, str], ...] = (
    ("U+304A", "\u304a", "o"),
    ("U+304D", "\u304d", "ki"),
    ("U+3059", "\u3059", "su"),
    ("U+3064", "\u3064", "tsu"),
    ("U+306A", "\u306a", "na"),
    ("U+306F", "\u306f", "ha"),
    ("U+307E", "\u307e", "ma"),
    ("U+3084", "\u3084", "ya"),
    ("U+308C", "\u308c", "re"),
    ("U+3092", "\u3092", "wo"),
)
_KMNIST_MIRRORS = (
    "https://codh.rois.ac.jp/kmnist/dataset/kmnist/",
    "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
)
KMNIST_SPEC = ImageDatasetSpec(
    name="kmnist",
    title="Kuzushiji-MNIST",
    train_images=_remote("train-images-idx3-ubyte.gz", "bdb82020997e1d708af4cf47b453dcf7",
                         None, *_KMNIST_MIRRORS),
    train_labels=_remote("train-labels-idx1-ubyte.gz", "e144d726b3acfaa3e44228e80efcd344",
                         None, *_KMNIST_MIRRORS),
    test_images=_remote("t10k-images-idx3-ubyte.gz", "5c965bf0a639b31b8f53240b1b52f4d7",
                         None, *_KMNIST_MIRRORS),
    test_labels=_remote("t10k-labels-idx1-ubyte.gz", "7320c461ea6c1c855c0b718fb2a4b134",
                         None, *_KMNIST_MIRRORS),
    class_names=tuple(romaji for _, _, romaji in KMNIST_CLASS_MAP),
    npz_files=("kmnist-train-imgs.npz", "kmnist-train-labels.npz",
               "kmnist-test-imgs.npz", "kmnist-test-labels.npz"),
    npz_hint=("the npz copies from https://codh.rois.ac.jp/kmnist/dataset/kmnist/ or Kaggle's "
              "'Kuzushiji-MNIST' dataset, each holding one array under the key 'arr_0'"),
    openml_name="Kuzushiji-MNIST",
)

_SPECS = {spec.name: spec for spec in (MNIST_SPEC, FASHION_MNIST_SPEC, KMNIST_SPEC)}
DATASET_NAMES = ("digits", "mnist", "fashion", "kmnist")
_ALIASES = {"digits": "digits", "mnist": "mnist", "fashion": "fashion_mnist", "fashion_mnist": "fashion_mnist",
            "fashion-mnist": "fashion_mnist", "kmnist": "kmnist"}
_SOURCES = ("official", "openml")


# ----------------------------------------------------------------------------------------------------------
# Files: cache dir, checksums, download, readers
# ----------------------------------------------------------------------------------------------------------
def get_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """The dataset cache directory: `data_dir` if given, else `$JAXRL_DATA_DIR`, else `~/.cache/jaxrl/datasets`."""
    if data_dir is None or str(data_dir) == "":
        data_dir = os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(data_dir).expanduser()


def file_md5(path: str | os.PathLike) -> str:
    """Hex md5 of a file, read in 1 MiB blocks."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_md5(path: Path, expected: str | None, what: str = "") -> None:
    if expected is None:
        return
    actual = file_md5(path)
    if actual != expected:
        raise ChecksumError(
            f"{path} has md5 {actual}, but the published md5 of {what or path.name} is {expected}: the file is "
            f"corrupt, truncated or a different file. Delete it (it is re-downloaded on the next run) or replace "
            f"it with the official file."
        )


def _verify_local_file(path: Path, remote: RemoteFile, title: str) -> None:
    """Accept a file already on disk if it is the published one: its md5 matches the published gz md5, or its
    uncompressed bytes match the published IDX md5 (a re-compressed copy such as Debian's
    `dataset-fashion-mnist`, or an uncompressed file put there by hand)."""
    if path.name.endswith(".gz") and (remote.md5 is None or file_md5(path) == remote.md5):
        return
    if remote.raw_md5 is None:
        if path.name.endswith(".gz"):
            _check_md5(path, remote.md5, what=f"{title}'s {remote.filename}")
        return  # uncompressed and no published md5 for it: the IDX header and shapes are checked when read
    try:
        raw = gzip.decompress(path.read_bytes()) if path.name.endswith(".gz") else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{path} is not a readable gzip file ({error}); delete it and download it again.") from error
    actual = hashlib.md5(raw, usedforsecurity=False).hexdigest()
    if actual != remote.raw_md5:
        raise ChecksumError(
            f"{path} is not {title}'s {remote.filename}: its md5 differs from the published one "
            f"({remote.md5} for the .gz file, {remote.raw_md5} for the uncompressed IDX bytes, which here are "
            f"{actual}). Delete it (it is re-downloaded on the next run) or replace it with the official file."
        )


Opener = Callable[..., "object"]


def download_file(
    remote: RemoteFile,
    directory: str | os.PathLike,
    *,
    opener: Opener | None = None,
    timeout: float = 60.0,
    progress: bool = False,
) -> Path:
    """Download `remote` into `directory` atomically and verify its md5; returns the final path.

    Each URL of `remote.urls` is tried in turn. Bytes are written to a temporary file in `directory`; only a
    complete file with the published md5 is moved to `directory / remote.filename` (`os.replace`), so an
    interrupted or corrupt download never leaves a file under the final name.

    Args:
      remote: the file to fetch.
      directory: destination folder (created if needed).
      opener: `urllib.request.urlopen`-like callable `(url, timeout=...) -> binary stream`; tests pass a fake.
      timeout: socket timeout in seconds per URL.
      progress: show a tqdm progress bar on stderr.

    Raises:
      ChecksumError: every URL answered, but the bytes did not have the published md5.
      OSError (urllib.error.URLError): no URL could be read; the message lists each URL and its error.
    """
    opener = urllib.request.urlopen if opener is None else opener
    directory = Path(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    destination = directory / remote.filename
    failures: list[str] = []
    checksum_error: ChecksumError | None = None
    for url in remote.urls:
        handle, temp_name = tempfile.mkstemp(prefix=f".{remote.filename}.", suffix=".part", dir=directory)
        temp_path = Path(temp_name)
        try:
            with os.fdopen(handle, "wb") as sink:
                with opener(url, timeout=timeout) as source:
                    _copy_stream(source, sink, progress=progress, label=remote.filename)
                sink.flush()
                os.fsync(sink.fileno())
            _check_md5(temp_path, remote.md5, what=f"{remote.filename} from {url}")
            os.replace(temp_path, destination)
            return destination
        except ChecksumError as error:
            checksum_error = error
            failures.append(f"{url}: wrong md5")
        except (OSError, ValueError) as error:  # URLError, HTTPError, timeouts, ...
            failures.append(f"{url}: {error}")
        finally:
            if temp_path.exists():
                temp_path.unlink()
    if created and not any(directory.iterdir()):
        directory.rmdir()  # leave no empty folder behind a failed download
    if checksum_error is not None and len(failures) == 1:
        raise checksum_error
    if checksum_error is not None:
        raise ChecksumError(f"could not download {remote.filename} with the published md5 {remote.md5}: "
                            + "; ".join(failures))
    raise urllib.error.URLError(f"could not download {remote.filename}: " + "; ".join(failures))


def _copy_stream(source, sink, *, progress: bool, label: str, block_size: int = 1 << 16) -> None:
    total = None
    headers = getattr(source, "headers", None)
    if headers is not None and headers.get("Content-Length"):
        total = int(headers.get("Content-Length"))
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="B", unit_scale=True, desc=label, leave=False)
    try:
        for block in iter(lambda: source.read(block_size), b""):
            sink.write(block)
            if bar is not None:
                bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()


# IDX format (LeCun et al.): 2 zero bytes, a type code, the number of dimensions, then each dimension as a
# big-endian int32, then the data in C order.
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (gzip-compressed when the name ends in `.gz`).

    Returns the array with the dimensions stated in the header: `[N, H, W]` for image files (magic
    0x00000803), `[N]` for label files (magic 0x00000801).

    Raises:
      DatasetError: not gzip, bad magic number, or fewer/more bytes than the header announces.
    """
    path = Path(path)
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as stream:
                raw = stream.read()
        else:
            raw = path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{path} is not a readable gzip file ({error}); delete it and download it again.") from error
    if len(raw) < 4:
        raise DatasetError(f"{path} is too short ({len(raw)} bytes) to be an IDX file.")
    zero_a, zero_b, type_code, n_dims = raw[0], raw[1], raw[2], raw[3]
    if zero_a != 0 or zero_b != 0 or type_code not in _IDX_DTYPES or not 1 <= n_dims <= 4:
        raise DatasetError(
            f"{path} is not an IDX file: magic number 0x{int.from_bytes(raw[:4], 'big'):08X} (expected "
            f"0x00000803 for images or 0x00000801 for labels)."
        )
    header_size = 4 + 4 * n_dims
    if len(raw) < header_size:
        raise DatasetError(f"{path}: IDX header announces {n_dims} dimensions but the file ends early.")
    shape = tuple(int.from_bytes(raw[4 + 4 * axis: 8 + 4 * axis], "big") for axis in range(n_dims))
    dtype = _IDX_DTYPES[type_code]
    expected_bytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header_size != expected_bytes:
        raise DatasetError(
            f"{path}: IDX header announces shape {shape} ({expected_bytes} bytes of data) but the file holds "
            f"{len(raw) - header_size} bytes; it is truncated or corrupt."
        )
    return np.frombuffer(raw, dtype=dtype, offset=header_size).reshape(shape).astype(dtype.newbyteorder("="))


def read_npz(path: str | os.PathLike, key: str = "arr_0") -> np.ndarray:
    """Read the array stored under `key` in an `.npz` file (`np.savez(path, array)` stores it as `arr_0`).

    Raises:
      DatasetError: the file is not an npz archive or lacks `key`.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            if key not in archive.files:
                raise DatasetError(f"{path} holds the arrays {archive.files}, not {key!r}.")
            return archive[key]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        if isinstance(error, DatasetError):
            raise
        raise DatasetError(f"{path} is not a readable .npz file ({error}).") from error


# ----------------------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------------------
def _finish(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: Sequence[str],
    image_shape: tuple[int, int],
    pixel_max: float,
    *,
    flatten: bool,
    scale: bool,
) -> ImageDataset:
    def images(x: np.ndarray) -> np.ndarray:
        if scale:
            x = x.astype(np.float32) / np.float32(pixel_max)
        return x.reshape(len(x), -1) if flatten else x.reshape((len(x),) + tuple(image_shape))

    return ImageDataset(
        name=name,
        x_train=images(x_train),
        y_train=np.asarray(y_train, dtype=np.int64),
        x_test=images(x_test),
        y_test=np.asarray(y_test, dtype=np.int64),
        class_names=tuple(class_names),
        image_shape=tuple(image_shape),
        pixel_max=float(pixel_max),
    )


def _validate_split(spec: ImageDatasetSpec, images: np.ndarray, labels: np.ndarray, where: str) -> None:
    height, width = spec.image_shape
    if images.ndim != 3 or images.shape[1:] != (height, width):
        raise DatasetError(f"{where}: images have shape {images.shape}, expected [N, {height}, {width}].")
    if images.dtype != np.uint8:
        raise DatasetError(f"{where}: images have dtype {images.dtype}, expected uint8.")
    if labels.ndim != 1 or len(labels) != len(images):
        raise DatasetError(f"{where}: {len(images)} images but labels of shape {labels.shape}.")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DatasetError(f"{where}: labels have dtype {labels.dtype}, expected integers.")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(spec.class_names)):
        raise DatasetError(
            f"{where}: labels range over [{labels.min()}, {labels.max()}], expected [0, {len(spec.class_names) - 1}]."
        )


def _candidate_dirs(spec: ImageDatasetSpec, data_dir: Path) -> tuple[Path, Path]:
    return (data_dir / spec.name, data_dir)


def _find(directories: Sequence[Path], filename: str) -> Path | None:
    for directory in directories:
        if (directory / filename).is_file():
            return directory / filename
    return None


def _missing_files_message(spec: ImageDatasetSpec, target: Path, missing: Sequence[RemoteFile],
                           failures: Sequence[str]) -> str:
    lines = [f"{spec.title}: {len(missing)} file(s) missing from {target} and not downloaded."]
    lines += [f"  reason: {reason}" for reason in failures]
    lines.append(f"Put these files there by hand (any of the URLs), or pass --data-dir / set ${DATA_DIR_ENV}:")
    for remote in missing:
        lines.append(f"  {target / remote.filename}  <-  {remote.urls[0]}" + (f"  (md5 {remote.md5})" if remote.md5 else ""))
        lines += [f"      mirror: {url}" for url in remote.urls[1:]]
    if spec.npz_files:
        lines.append(f"Or put {', '.join(spec.npz_files)} in {target}: {spec.npz_hint}.")
    if spec.openml_name:
        lines.append(f"Or use OpenML: source='openml' (`--source openml`), which fetches {spec.openml_name!r}.")
    return "\n".join(lines)


def load_image_dataset(
    spec: ImageDatasetSpec,
    data_dir: str | os.PathLike | None = None,
    *,
    download: bool = True,
    flatten: bool = False,
    scale: bool = False,
    opener: Opener | None = None,
    progress: bool = True,
) -> ImageDataset:
    """Load an MNIST-format dataset described by `spec` from the data directory, downloading missing files.

    Lookup: the hand-placed npz copies (`spec.npz_files`, all four) if present, else the four IDX-gz files,
    each md5-verified; missing IDX files are downloaded (atomically) when `download` is true.

    Args:
      spec: file names, URLs, md5s and class names (e.g. `KMNIST_SPEC`).
      data_dir: cache directory (see `get_data_dir`).
      download: fetch missing files; when false, a missing file raises `DatasetNotFoundError` right away.
      flatten: return images as `[N, H*W]` instead of `[N, H, W]`.
      scale: return `float32` pixels in `[0, 1]` instead of `uint8` in `[0, 255]`.
      opener: passed to `download_file` (tests).
      progress: progress bars while downloading.

    Returns:
      ImageDataset with `x_train [60000, 28, 28] uint8`, `y_train [60000] int64`, ... for the real sets.

    Raises:
      DatasetNotFoundError: files missing and not downloadable; the message names each file, its URL and
        where to put it.
      DatasetError / ChecksumError: a file is there but corrupt or not the published one.
    """
    root = get_data_dir(data_dir)
    directories = _candidate_dirs(spec, root)
    target = directories[0]

    if spec.npz_files:
        npz_paths = [_find(directories, filename) for filename in spec.npz_files]
        if all(path is not None for path in npz_paths):
            train_images, train_labels, test_images, test_labels = (read_npz(path) for path in npz_paths)
            _validate_split(spec, train_images, train_labels, f"{npz_paths[0]} / {npz_paths[1]}")
            _validate_split(spec, test_images, test_labels, f"{npz_paths[2]} / {npz_paths[3]}")
            return _finish(spec.name, train_images, train_labels, test_images, test_labels, spec.class_names,
                           spec.image_shape, 255.0, flatten=flatten, scale=scale)

    paths: list[Path | None] = []
    missing: list[RemoteFile] = []
    failures: list[str] = []
    if not download:
        failures.append("downloads are off (download=False / --no-download)")
    for remote in spec.idx_files:
        path = _find(directories, remote.filename) or _find(directories, remote.filename.removesuffix(".gz"))
        if path is not None:
            _verify_local_file(path, remote, spec.title)
        elif download and not failures:  # after one network failure, do not wait on the others
            try:
                path = download_file(remote, target, opener=opener, progress=progress)
            except ChecksumError:
                raise
            except OSError as error:
                failures.append(str(getattr(error, "reason", error)))
        if path is None:
            missing.append(remote)
        paths.append(path)
    if missing:
        raise DatasetNotFoundError(_missing_files_message(spec, target, missing, failures))

    train_images, train_labels, test_images, test_labels = (read_idx(path) for path in paths)
    _validate_split(spec, train_images, train_labels, f"{paths[0]} / {paths[1]}")
    _validate_split(spec, test_images, test_labels, f"{paths[2]} / {paths[3]}")
    return _finish(spec.name, train_images, train_labels, test_images, test_labels, spec.class_names,
                   spec.image_shape, 255.0, flatten=flatten, scale=scale)


OPENML_N_TRAIN = 60000  # OpenML's copies list the 60,000 training images first, then the 10,000 test images


def _load_openml(spec: ImageDatasetSpec, data_dir: str | os.PathLike | None, *, flatten: bool,
                 scale: bool) -> ImageDataset:
    from sklearn.datasets import fetch_openml

    home = get_data_dir(data_dir) / "openml"
    try:
        bunch = fetch_openml(name=spec.openml_name, version=1, as_frame=False, parser="liac-arff",
                             data_home=str(home))
    except (OSError, urllib.error.URLError) as error:
        raise DatasetNotFoundError(
            f"could not fetch {spec.openml_name!r} from OpenML ({error}); it is cached under {home} once fetched. "
            f"Without network, use the official files instead (source='official'), placed by hand in "
            f"{get_data_dir(data_dir) / spec.name}."
        ) from error
    n_train = OPENML_N_TRAIN
    images = np.asarray(bunch.data)
    labels = np.asarray(bunch.target).astype(np.int64)
    if images.shape[1] != spec.image_shape[0] * spec.image_shape[1] or len(images) <= n_train:
        raise DatasetError(f"OpenML's {spec.openml_name!r} has shape {images.shape}, expected [70000, 784] "
                           f"(the first {n_train} rows are the training set).")
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8).reshape((-1,) + spec.image_shape)
    split = (images[:n_train], labels[:n_train], images[n_train:], labels[n_train:])
    _validate_split(spec, split[0], split[1], f"OpenML {spec.openml_name} (train)")
    _validate_split(spec, split[2], split[3], f"OpenML {spec.openml_name} (test)")
    return _finish(spec.name, *split, spec.class_names, spec.image_shape, 255.0, flatten=flatten, scale=scale)


def _load_named(spec: ImageDatasetSpec, data_dir, *, source: str, download: bool, flatten: bool, scale: bool,
                opener: Opener | None) -> ImageDataset:
    if source not in _SOURCES:
        raise ValueError(f"source must be one of {_SOURCES}, got {source!r}.")
    if source == "openml":
        return _load_openml(spec, data_dir, flatten=flatten, scale=scale)
    return load_image_dataset(spec, data_dir, download=download, flatten=flatten, scale=scale, opener=opener)


def load_mnist(data_dir=None, *, source: str = "official", download: bool = True, flatten: bool = False,
               scale: bool = False, opener: Opener | None = None) -> ImageDataset:
    """MNIST handwritten digits: 60,000 train / 10,000 test, 28x28 uint8. See `load_image_dataset`."""
    return _load_named(MNIST_SPEC, data_dir, source=source, download=download, flatten=flatten, scale=scale,
                       opener=opener)


def load_fashion_mnist(data_dir=None, *, source: str = "official", download: bool = True, flatten: bool = False,
                       scale: bool = False, opener: Opener | None = None) -> ImageDataset:
    """Fashion-MNIST (Zalando): 60,000 train / 10,000 test, 28x28 uint8, 10 garment classes."""
    return _load_named(FASHION_MNIST_SPEC, data_dir, source=source, download=download, flatten=flatten,
                       scale=scale, opener=opener)


def load_kmnist(data_dir=None, *, source: str = "official", download: bool = True, flatten: bool = False,
                scale: bool = False, opener: Opener | None = None) -> ImageDataset:
    """Kuzushiji-MNIST (ROIS-CODH): 60,000 train / 10,000 test, 28x28 uint8, 10 hiragana.

    `class_names` are the romanizations (o, ki, su, tsu, na, ha, ma, ya, re, wo); `KMNIST_CLASS_MAP` gives
    the code point and the hiragana of each. Reads `kmnist-*-imgs.npz` / `kmnist-*-labels.npz` (key `arr_0`)
    when all four are in the folder, else the IDX-gz files.
    """
    return _load_named(KMNIST_SPEC, data_dir, source=source, download=download, flatten=flatten, scale=scale,
                       opener=opener)


def load_digits(data_dir=None, *, flatten: bool = False, scale: bool = False, test_size: float = 0.25,
                random_state: int = 0, **_unused) -> ImageDataset:
    """scikit-learn's bundled 8x8 digits (1,797 images, pixel values 0..16), split stratified train/test.

    Needs no files and no network (the offline default). `data_dir` is accepted for a uniform signature.

    Returns:
      ImageDataset with `x_train [1347, 8, 8] uint8` (or `[1347, 64]` / float32 in [0, 1]), `x_test [450, ...]`.
    """
    from sklearn.datasets import load_digits as sklearn_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_load_digits()
    images = bunch.images.astype(np.uint8)  # [1797, 8, 8], values 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        images, bunch.target, test_size=test_size, random_state=random_state, stratify=bunch.target)
    return _finish("digits", x_train, y_train, x_test, y_test, tuple(str(d) for d in range(10)), (8, 8), 16.0,
                   flatten=flatten, scale=scale)


def load_dataset(name: str, data_dir=None, *, source: str = "official", download: bool = True,
                 flatten: bool = False, scale: bool = False) -> ImageDataset:
    """Load a dataset by name: `digits`, `mnist`, `fashion` (or `fashion_mnist`), `kmnist`."""
    key = _ALIASES.get(str(name).lower())
    if key is None:
        raise ValueError(f"unknown dataset {name!r}; choose one of {DATASET_NAMES}.")
    if key == "digits":
        return load_digits(data_dir, flatten=flatten, scale=scale)
    return _load_named(_SPECS[key], data_dir, source=source, download=download, flatten=flatten, scale=scale,
                       opener=None)
