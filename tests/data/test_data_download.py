"""The download path against a local HTTP server: verified, atomic, never keeping a partial."""

from __future__ import annotations

import numpy as np
import pytest
from data_fixtures import CifarFixture, IdxFixture, sha256

from convnet.core.files import cache_root
from convnet.data import DataError, cifar, load_dataset, mnist
from convnet.data.download import RemoteFile, fetch

STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
         "t10k-labels-idx1-ubyte")


def serve_idx(server, fixture: IdxFixture, prefix: str = "/mnist/") -> str:
    for name, data in fixture.gz.items():
        server.serve(prefix + name, data)
    return server.base_url + prefix


def cache_files(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_download_verifies_and_caches(server, tmp_path, idx_fixture):
    base = serve_idx(server, idx_fixture)
    cache = tmp_path / "cache"
    ds = load_dataset("mnist", "train", cache_dir=cache, mirrors=[base],
                      checksums=idx_fixture.checksums, progress=False)
    assert len(ds) == 30 and ds.input_shape == (1, 28, 28)
    np.testing.assert_array_equal(ds.images[:, 0], idx_fixture.train_images)
    np.testing.assert_array_equal(ds.labels, idx_fixture.train_labels)
    assert cache_files(cache / "mnist") == ["train-images-idx3-ubyte.gz",
                                            "train-labels-idx1-ubyte.gz"]
    assert (cache / "mnist" / "train-images-idx3-ubyte.gz").read_bytes() == \
        idx_fixture.gz["train-images-idx3-ubyte.gz"]
    fetched = len(server.requests)
    again = load_dataset("mnist", "train", cache_dir=cache, mirrors=[base],
                         checksums=idx_fixture.checksums, download=False)
    assert len(server.requests) == fetched  # served from the cache
    np.testing.assert_array_equal(again.images, ds.images)


def test_mirror_from_environment_variable(server, tmp_path, idx_fixture, monkeypatch):
    base = serve_idx(server, idx_fixture, prefix="/fashion/")
    monkeypatch.setenv("CONVNET_FASHION_MNIST_URL", base)
    monkeypatch.setenv("CONVNET_CACHE", str(tmp_path / "envcache"))
    ds = load_dataset("fashion-mnist", "test", checksums=idx_fixture.checksums, progress=False)
    assert len(ds) == 20 and ds.class_names[0] == "T-shirt/top"
    assert server.requests == ["/fashion/t10k-images-idx3-ubyte.gz",
                               "/fashion/t10k-labels-idx1-ubyte.gz"]
    assert cache_files(tmp_path / "envcache" / "fashion-mnist") == [
        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


@pytest.mark.parametrize("mode", ["truncate", "truncate-no-length"])
def test_interrupted_download_leaves_nothing_and_a_later_one_works(server, tmp_path,
                                                                   idx_fixture, mode):
    base = serve_idx(server, idx_fixture)
    server.serve("/mnist/t10k-images-idx3-ubyte.gz",
                 idx_fixture.gz["t10k-images-idx3-ubyte.gz"], mode)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", cache_dir=cache, mirrors=[base],
                     checksums=idx_fixture.checksums, progress=False)
    message = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in message and "Nothing was kept" in message
    if mode == "truncate":
        full = len(idx_fixture.gz["t10k-images-idx3-ubyte.gz"])
        assert f"connection closed after {full // 2} of {full} bytes" in message
    else:  # without a length only the checksum can tell
        assert "checksum mismatch" in message
    assert cache_files(cache / "mnist") == []  # no partial file, no temp file

    server.serve("/mnist/t10k-images-idx3-ubyte.gz", idx_fixture.gz["t10k-images-idx3-ubyte.gz"])
    ds = load_dataset("mnist", "test", cache_dir=cache, mirrors=[base],
                      checksums=idx_fixture.checksums, progress=False)
    np.testing.assert_array_equal(ds.images[:, 0], idx_fixture.test_images)
    assert cache_files(cache / "mnist") == ["t10k-images-idx3-ubyte.gz",
                                            "t10k-labels-idx1-ubyte.gz"]


def test_checksum_mismatch_names_both_hashes_and_keeps_nothing(server, tmp_path, idx_fixture):
    base = serve_idx(server, idx_fixture)
    wrong = b"\x1f\x8b" + b"not the right file" * 10
    server.serve("/mnist/train-labels-idx1-ubyte.gz", wrong)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "train", cache_dir=cache, mirrors=[base],
                     checksums=idx_fixture.checksums, progress=False)
    message = str(info.value)
    assert f"expected SHA-256 {idx_fixture.checksums['train-labels-idx1-ubyte.gz']}" in message
    assert f"received {sha256(wrong)}" in message
    assert "train-labels-idx1-ubyte.gz" not in cache_files(cache / "mnist")
    assert not [n for n in cache_files(cache / "mnist") if n.endswith(".part")]


def test_a_failing_mirror_falls_through_to_the_next(server, tmp_path, idx_fixture):
    good = serve_idx(server, idx_fixture, prefix="/good/")
    ds = load_dataset("mnist", "test", cache_dir=tmp_path, mirrors=[server.base_url + "/gone/",
                                                                    good],
                      checksums=idx_fixture.checksums, progress=False)
    assert len(ds) == 20
    assert server.requests[:2] == ["/gone/t10k-images-idx3-ubyte.gz",
                                   "/good/t10k-images-idx3-ubyte.gz"]


def test_every_mirror_failing_lists_each(server, tmp_path, idx_fixture):
    with pytest.raises(DataError) as info:
        load_dataset("mnist", "test", cache_dir=tmp_path,
                     mirrors=[server.base_url + "/a/", server.base_url + "/b/"],
                     checksums=idx_fixture.checksums, progress=False)
    message = str(info.value)
    assert "/a/t10k-images-idx3-ubyte.gz: HTTP 404" in message
    assert "/b/t10k-images-idx3-ubyte.gz: HTTP 404" in message
    assert "--data-dir" in message


def test_download_off_and_file_missing(tmp_path, idx_fixture):
    with pytest.raises(DataError, match="is not in the cache .* downloading is turned off"):
        load_dataset("mnist", "train", cache_dir=tmp_path, download=False,
                     checksums=idx_fixture.checksums)


def test_damaged_cached_file_is_fetched_again(server, tmp_path, idx_fixture):
    base = serve_idx(server, idx_fixture)
    folder = tmp_path / "mnist"
    idx_fixture.write(folder)
    good = idx_fixture.gz["t10k-labels-idx1-ubyte.gz"]
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(good[:-3])  # damaged on disk
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is damaged"):
        load_dataset("mnist", "test", cache_dir=tmp_path, download=False,
                     checksums=idx_fixture.checksums)
    ds = load_dataset("mnist", "test", cache_dir=tmp_path, mirrors=[base],
                      checksums=idx_fixture.checksums, progress=False)
    assert server.requests == ["/mnist/t10k-labels-idx1-ubyte.gz"]  # only the damaged one
    assert (folder / "t10k-labels-idx1-ubyte.gz").read_bytes() == good
    np.testing.assert_array_equal(ds.labels, idx_fixture.test_labels)


def test_size_is_checked_when_known(server, tmp_path):
    body = b"x" * 100
    server.serve("/f/file.bin", body)
    remote = RemoteFile("file.bin", sha256(body), size=99)
    with pytest.raises(DataError, match="received 100 bytes, expected 99"):
        fetch(remote, tmp_path, [server.base_url + "/f/"], progress=False)
    assert list(tmp_path.iterdir()) == []


def test_progress_bar_goes_to_stderr(server, tmp_path, capsys):
    body = bytes(range(256)) * 64
    server.serve("/f/file.bin", body)
    path = fetch(RemoteFile("file.bin", sha256(body), len(body)), tmp_path,
                 [server.base_url + "/f"], progress=True)
    assert path.read_bytes() == body
    assert "downloading file.bin" in capsys.readouterr().err


def test_unwritable_cache_folder(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(DataError, match="cannot create the cache folder .*--cache-dir"):
        fetch(RemoteFile("x", "0" * 64), blocker / "sub", ["http://127.0.0.1:9/"],
              progress=False)
    assert blocker.read_text() == "not a folder"


def test_cifar10_download_reads_from_the_archive(server, tmp_path):
    fixture = CifarFixture()
    archive = fixture.tar_gz()
    server.serve("/cifar/cifar-10-python.tar.gz", archive)
    checksums = {"cifar-10-python.tar.gz": sha256(archive)}
    train = load_dataset("cifar10", "train", cache_dir=tmp_path,
                         mirrors=[server.base_url + "/cifar/"], checksums=checksums,
                         progress=False)
    test = load_dataset("cifar10", "test", cache_dir=tmp_path, download=False,
                        checksums=checksums)
    images, labels = fixture.train()
    np.testing.assert_array_equal(train.images, images)
    np.testing.assert_array_equal(train.labels, labels)
    assert len(test) == 6 and train.class_names[3] == "cat"
    assert server.requests == ["/cifar/cifar-10-python.tar.gz"]
    assert cache_files(tmp_path / "cifar10") == ["cifar-10-python.tar.gz"]


def test_cache_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("CONVNET_CACHE", str(tmp_path / "env"))
    assert cache_root(tmp_path / "arg") == tmp_path / "arg"
    assert cache_root() == tmp_path / "env"
    monkeypatch.delenv("CONVNET_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_root() == tmp_path / "xdg" / "convnet"


def test_published_checksums_stay_pinned():
    """The real registry keeps the published values (tensorflow-datasets url_checksums,
    Keras' cifar10.py and torchvision-based projects agree on them)."""
    published = {
        "train-images-idx3-ubyte.gz":
            "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "t10k-labels-idx1-ubyte.gz":
            "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    }
    for stem in STEMS:
        remote = mnist.MNIST.files[stem]
        assert len(remote.sha256) == 64 and remote.size > 0
        if remote.filename in published:
            assert remote.sha256 == published[remote.filename]
    assert mnist.FASHION_MNIST.files["train-images-idx3-ubyte"].sha256 == (
        "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84")
    assert cifar.ARCHIVE.sha256 == (
        "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce")
    assert cifar.ARCHIVE.size == 170498071
    hashes = [r.sha256 for r in mnist.MNIST.files.values()]
    hashes += [r.sha256 for r in mnist.FASHION_MNIST.files.values()]
    assert len(set(hashes)) == 8


def test_ctrl_c_during_a_download_leaves_nothing(server, tmp_path, monkeypatch):
    import convnet.data.download as download

    body = b"y" * (3 << 20)  # several chunks
    server.serve("/f/big.bin", body)

    class Interrupting:
        def update(self, n):
            raise KeyboardInterrupt

        def close(self):
            pass

    monkeypatch.setattr(download, "_progress_bar", lambda *a: Interrupting())
    with pytest.raises(KeyboardInterrupt):
        fetch(RemoteFile("big.bin", sha256(body)), tmp_path, [server.base_url + "/f/"])
    assert list(tmp_path.iterdir()) == []
