"""Dataset loaders on small files written here in the real formats (IDX gz, npz with `arr_0`); no network."""
from __future__ import annotations

import gzip
import io
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest

from jaxrl import datasets
from jaxrl.datasets import (
    ChecksumError,
    DatasetError,
    DatasetNotFoundError,
    ImageDatasetSpec,
    RemoteFile,
    download_file,
    file_md5,
    load_image_dataset,
    read_idx,
    read_npz,
)


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0000 08 <ndim>, big-endian int32 dims, then the bytes."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">i", size) for size in array.shape)
    return header + array.tobytes()


def write_idx_gz(path: Path, array: np.ndarray) -> Path:
    path.write_bytes(gzip.compress(idx_bytes(array)))
    return path


def tiny_split(seed: int, n_train: int = 12, n_test: int = 5):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_train, dtype=np.uint8),
            rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8), rng.integers(0, 10, n_test, dtype=np.uint8))


def write_idx_set(directory: Path, split) -> dict[str, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    names = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")
    return {name: write_idx_gz(directory / name, array) for name, array in zip(names, split)}


def spec_for(files: dict[str, Path], base_url: str = "file:///nonexistent/") -> ImageDatasetSpec:
    """A spec like MNIST_SPEC whose md5s are those of the tiny files just written."""
    remotes = [RemoteFile(name, (base_url + name,), file_md5(path)) for name, path in files.items()]
    return ImageDatasetSpec("tiny", "Tiny-MNIST", *remotes, class_names=tuple("0123456789"))


# -------------------------------------------------------------------------------------------------- IDX / npz
def test_idx_magic_numbers_and_round_trip(tmp_path):
    images = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8).reshape(2, 28, 28)
    labels = np.array([3, 7], dtype=np.uint8)
    raw_images, raw_labels = idx_bytes(images), idx_bytes(labels)
    assert raw_images[:4] == bytes.fromhex("00000803") and raw_labels[:4] == bytes.fromhex("00000801")
    np.testing.assert_array_equal(read_idx(write_idx_gz(tmp_path / "i.gz", images)), images)
    np.testing.assert_array_equal(read_idx(write_idx_gz(tmp_path / "l.gz", labels)), labels)
    (tmp_path / "raw-idx1-ubyte").write_bytes(raw_labels)  # uncompressed IDX is accepted too
    np.testing.assert_array_equal(read_idx(tmp_path / "raw-idx1-ubyte"), labels)


@pytest.mark.parametrize(
    "payload, message",
    [
        (b"definitely not gzip", "not a readable gzip"),
        (gzip.compress(b"\x00\x00\x08\x03" + struct.pack(">iii", 5, 28, 28) + b"\x00" * 100), "truncated"),
        (gzip.compress(b"\x12\x34\x56\x78" + b"\x00" * 16), "magic number 0x12345678"),
    ],
    ids=["not-gzip", "truncated", "bad-magic"],  # gzip headers hold a timestamp: ids must not depend on bytes
)
def test_corrupt_idx_gives_clear_error(tmp_path, payload, message):
    path = tmp_path / "bad-idx3-ubyte.gz"
    path.write_bytes(payload)
    with pytest.raises(DatasetError, match=message):
        read_idx(path)


def test_truncated_gzip_stream_gives_clear_error(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 28, 28), np.uint8)))[:40])
    with pytest.raises(DatasetError, match="cut.gz"):
        read_idx(path)


def test_npz_arr_0(tmp_path):
    array = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.savez(tmp_path / "a.npz", array)
    np.testing.assert_array_equal(read_npz(tmp_path / "a.npz"), array)
    np.savez(tmp_path / "b.npz", images=array)
    with pytest.raises(DatasetError, match="arr_0"):
        read_npz(tmp_path / "b.npz")
    (tmp_path / "c.npz").write_bytes(b"garbage")
    with pytest.raises(DatasetError, match="not a readable .npz"):
        read_npz(tmp_path / "c.npz")


# -------------------------------------------------------------------------------------------------- loading
def test_load_idx_dataset_with_checksums(tmp_path):
    split = tiny_split(0)
    files = write_idx_set(tmp_path / "tiny", split)
    data = load_image_dataset(spec_for(files), tmp_path, download=False)
    assert data.x_train.shape == (12, 28, 28) and data.x_train.dtype == np.uint8
    assert data.y_train.dtype == np.int64 and data.image_shape == (28, 28) and data.n_classes == 10
    for got, want in zip((data.x_train, data.y_train, data.x_test, data.y_test), split):
        np.testing.assert_array_equal(got, want)
    flat = load_image_dataset(spec_for(files), tmp_path, download=False, flatten=True, scale=True)
    assert flat.x_test.shape == (5, 784) and flat.x_test.dtype == np.float32
    np.testing.assert_allclose(flat.x_test, split[2].reshape(5, 784) / 255.0, rtol=1e-6)


def test_wrong_checksum_names_the_file(tmp_path):
    files = write_idx_set(tmp_path / "tiny", tiny_split(1))
    spec = spec_for(files)
    spec = spec._replace(test_labels=spec.test_labels._replace(md5="0" * 32))
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte.gz.*published md5.*0{32}"):
        load_image_dataset(spec, tmp_path, download=False)


def test_recompressed_or_uncompressed_copy_accepted_by_raw_md5(tmp_path):
    """A copy gzipped differently (e.g. Debian's dataset-fashion-mnist) has another .gz md5 but the same IDX bytes."""
    import hashlib

    split = tiny_split(6)
    files = write_idx_set(tmp_path / "tiny", split)
    spec = spec_for(files)
    remotes = []
    for remote, array in zip(spec.idx_files, split):
        raw_md5 = hashlib.md5(idx_bytes(array)).hexdigest()
        remotes.append(remote._replace(md5="e" * 32, raw_md5=raw_md5))  # the .gz md5 no longer matches
    spec = spec._replace(train_images=remotes[0], train_labels=remotes[1], test_images=remotes[2],
                         test_labels=remotes[3])
    np.testing.assert_array_equal(load_image_dataset(spec, tmp_path, download=False).x_train, split[0])
    # an uncompressed file put there by hand is read too, and checked against the raw md5
    files["t10k-labels-idx1-ubyte.gz"].unlink()
    (tmp_path / "tiny" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(split[3]))
    np.testing.assert_array_equal(load_image_dataset(spec, tmp_path, download=False).y_test, split[3])
    (tmp_path / "tiny" / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(split[3][::-1]))
    with pytest.raises(ChecksumError, match="uncompressed IDX bytes"):
        load_image_dataset(spec, tmp_path, download=False)


def test_missing_files_offline_message(tmp_path):
    files = write_idx_set(tmp_path / "made", tiny_split(2))
    spec = spec_for(files)
    with pytest.raises(DatasetNotFoundError) as info:
        load_image_dataset(spec, tmp_path / "empty", download=False)
    message = str(info.value)
    for remote in spec.idx_files:
        assert remote.filename in message and remote.urls[0] in message
    assert str(tmp_path / "empty" / "tiny") in message and "--data-dir" in message


def test_kmnist_offline_message_mentions_kaggle_npz(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("network is unreachable (test)")

    with pytest.raises(DatasetNotFoundError) as info:
        datasets.load_kmnist(tmp_path, opener=offline)
    message = str(info.value)
    assert "network is unreachable (test)" in message
    assert "kmnist-train-imgs.npz" in message and "arr_0" in message and "Kaggle" in message
    assert "codh.rois.ac.jp/kmnist/dataset/kmnist/train-images-idx3-ubyte.gz" in message
    assert not [path for path in tmp_path.rglob("*")]  # no partial file, not even an empty folder, left behind


def test_kmnist_npz_copies_are_read(tmp_path):
    x_train, y_train, x_test, y_test = tiny_split(3)
    folder = tmp_path / "kmnist"
    folder.mkdir()
    for name, array in zip(datasets.KMNIST_SPEC.npz_files, (x_train, y_train, x_test, y_test)):
        np.savez_compressed(folder / name, array)  # Kaggle's files: one array under arr_0
    data = datasets.load_kmnist(tmp_path, download=False)
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.y_test, y_test)
    assert data.class_names == ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")
    assert [char for _, char, _ in datasets.KMNIST_CLASS_MAP] == list("おきすつなはまやれを")


def test_npz_directly_in_data_dir_and_bad_shape(tmp_path):
    x_train, y_train, x_test, y_test = tiny_split(4)
    names = datasets.KMNIST_SPEC.npz_files
    for name, array in zip(names, (x_train, y_train, x_test, y_test)):
        np.savez(tmp_path / name, array)
    assert datasets.load_kmnist(tmp_path, download=False, flatten=True).x_train.shape == (12, 784)
    np.savez(tmp_path / names[1], y_train[:-1])  # one label short
    with pytest.raises(DatasetError, match="12 images but labels of shape"):
        datasets.load_kmnist(tmp_path, download=False)
    np.savez(tmp_path / names[1], y_train + 10)  # labels out of range
    with pytest.raises(DatasetError, match="labels range"):
        datasets.load_kmnist(tmp_path, download=False)


def test_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.DATA_DIR_ENV, str(tmp_path / "from-env"))
    assert datasets.get_data_dir(tmp_path / "flag") == tmp_path / "flag"
    assert datasets.get_data_dir() == tmp_path / "from-env"
    monkeypatch.delenv(datasets.DATA_DIR_ENV)
    assert datasets.get_data_dir() == Path("~/.cache/jaxrl/datasets").expanduser()


# -------------------------------------------------------------------------------------------------- download
def test_download_from_file_url_then_load(tmp_path):
    split = tiny_split(5)
    source = write_idx_set(tmp_path / "server", split)
    spec = spec_for(source, base_url=(tmp_path / "server").as_uri() + "/")
    data = load_image_dataset(spec, tmp_path / "cache", download=True, progress=False)
    np.testing.assert_array_equal(data.x_train, split[0])
    assert sorted(path.name for path in (tmp_path / "cache" / "tiny").iterdir()) == sorted(source)


def test_download_tries_mirrors_and_verifies(tmp_path):
    payload = gzip.compress(idx_bytes(np.arange(4, dtype=np.uint8)))
    seen = []

    def opener(url, timeout):
        seen.append(url)
        if "dead" in url:
            raise urllib.error.URLError("connection refused")
        return io.BytesIO(payload)

    import hashlib

    remote = RemoteFile("x-idx1-ubyte.gz", ("https://dead.example/x", "https://mirror.example/x"),
                        hashlib.md5(payload).hexdigest())
    path = download_file(remote, tmp_path, opener=opener)
    assert seen == list(remote.urls) and path.read_bytes() == payload
    assert [p.name for p in tmp_path.iterdir()] == ["x-idx1-ubyte.gz"]


def test_download_with_wrong_checksum_leaves_nothing(tmp_path):
    remote = RemoteFile("y.gz", ("https://example.invalid/y.gz",), "f" * 32)
    (tmp_path / "keep.txt").write_text("unrelated")
    with pytest.raises(ChecksumError, match="published md5"):
        download_file(remote, tmp_path, opener=lambda url, timeout: io.BytesIO(b"tampered bytes"))
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_interrupted_download_keeps_previous_file(tmp_path):
    class Broken(io.BytesIO):
        def read(self, size=-1):
            raise ConnectionResetError("reset by peer mid-download")

    (tmp_path / "z.gz").write_bytes(b"previous good file")
    remote = RemoteFile("z.gz", ("https://example.invalid/z.gz",), None)
    with pytest.raises(urllib.error.URLError, match="reset by peer"):
        download_file(remote, tmp_path, opener=lambda url, timeout: Broken())
    assert (tmp_path / "z.gz").read_bytes() == b"previous good file"
    assert [p.name for p in tmp_path.iterdir()] == ["z.gz"]


# -------------------------------------------------------------------------------------------------- digits
def test_load_digits_offline():
    data = datasets.load_dataset("digits")
    assert data.x_train.shape == (1347, 8, 8) and data.x_test.shape == (450, 8, 8)
    assert data.x_train.dtype == np.uint8 and data.x_train.max() == 16 and data.pixel_max == 16.0
    scaled = datasets.load_digits(flatten=True, scale=True)
    assert scaled.x_train.shape == (1347, 64) and scaled.x_train.max() == 1.0
    counts = np.bincount(data.y_test)  # stratified: 25% of each digit (174..183 per class in all)
    assert counts.min() >= 43 and counts.max() <= 46


def test_unknown_dataset_and_source():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        datasets.load_dataset("cifar")
    with pytest.raises(ValueError, match="source must be one of"):
        datasets.load_mnist(source="torrent")


def test_openml_source_splits_60000_10000(tmp_path, monkeypatch):
    """source='openml' goes through sklearn's fetch_openml (replaced here: no network) and splits train/test."""
    import sklearn.datasets
    from sklearn.utils import Bunch

    monkeypatch.setattr(datasets, "OPENML_N_TRAIN", 60)  # 70 rows here instead of 70,000
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (70, 784)).astype(np.float64)
    labels = (np.arange(70) % 10).astype(str)  # OpenML returns the classes as strings
    calls = []

    def fake_fetch_openml(**kwargs):
        calls.append(kwargs)
        return Bunch(data=pixels, target=labels)

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", fake_fetch_openml)
    data = datasets.load_kmnist(tmp_path, source="openml", flatten=True)
    assert calls[0]["name"] == "Kuzushiji-MNIST" and calls[0]["data_home"] == str(tmp_path / "openml")
    assert data.x_train.shape == (60, 784) and data.x_test.shape == (10, 784)
    assert data.x_train.dtype == np.uint8 and data.y_test[:3].tolist() == [0, 1, 2]
    np.testing.assert_array_equal(data.x_test[0], pixels[60])

    def offline(**kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(sklearn.datasets, "fetch_openml", offline)
    with pytest.raises(DatasetNotFoundError, match="could not fetch 'mnist_784' from OpenML"):
        datasets.load_mnist(tmp_path, source="openml")
