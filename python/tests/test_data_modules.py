"""memcnn.data: CIFAR readers (both official layouts, checks, verified download from a local archive),
MemCNN's augmentation and loaders, NSamplesRandomSampler, Fashion-MNIST from Debian's package."""

import gzip
import hashlib
import os
import pickle
import tarfile

import numpy as np
import pytest
import torch

from memcnn.data import fashion_mnist
from memcnn.data.cifar import CIFAR10, CIFAR100, get_cifar_data_loaders, random_crop_transform
from memcnn.data.sampling import NSamplesRandomSampler
from helpers import write_cifar10


@pytest.mark.parametrize("binary", [False, True])
def test_cifar10_reads_both_layouts(tmp_path, binary):
    train_x, train_y, test_x, test_y = write_cifar10(tmp_path, binary=binary)
    train, test = CIFAR10(tmp_path, train=True), CIFAR10(str(tmp_path), train=False)
    assert train.data.shape == (50, 32, 32, 3) and train.data.dtype == np.uint8 and len(test) == 20
    assert np.array_equal(train.data, train_x) and train.targets == train_y.tolist()
    assert np.array_equal(test.data, test_x) and test.targets == test_y.tolist()
    image, label = test[3]
    assert np.array_equal(image, test_x[3]) and label == test_y[3]


def test_cifar100_binary_takes_the_fine_label(tmp_path):
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    for name, count in (("train.bin", 6), ("test.bin", 4)):
        records = np.zeros((count, 2 + 3072), dtype=np.uint8)
        records[:, 0] = 3            # coarse label
        records[:, 1] = np.arange(count) + 90  # fine label
        records.tofile(str(folder / name))
    data = CIFAR100(tmp_path, train=True)
    assert data.targets == [90, 91, 92, 93, 94, 95] and data.data.shape == (6, 32, 32, 3)


def test_cifar_missing_or_broken_files_are_clear_errors(tmp_path):
    with pytest.raises(RuntimeError, match="cifar-10-batches-py.*data_batch_1.*cifar-10-batches-bin"):
        CIFAR10(tmp_path, train=True, download=False)
    write_cifar10(tmp_path, binary=True)
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(b"\0" * 100)
    with pytest.raises(RuntimeError, match="truncated"):
        CIFAR10(tmp_path, train=False)
    write_cifar10(tmp_path)
    with open(str(tmp_path / "cifar-10-batches-py" / "test_batch"), "wb") as f:
        pickle.dump({"data": np.zeros((2, 3072), np.uint8), "labels": [1, 10]}, f)
    with pytest.raises(RuntimeError, match="label 10 of image 1 is out of range"):
        CIFAR10(tmp_path, train=False)


def test_cifar_download_checks_the_archive(tmp_path):
    """download=True fetches the python version's archive, checks its MD5 and extracts it (here from a
    local file: URL, so nothing leaves the machine); a wrong checksum leaves nothing behind."""
    source = tmp_path / "source"
    write_cifar10(source)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(str(archive), "w:gz") as tar:
        tar.add(str(source / "cifar-10-batches-py"), arcname="cifar-10-batches-py")
    md5 = hashlib.md5(archive.read_bytes()).hexdigest()

    class Local(CIFAR10):
        url_base = "file://{}/".format(tmp_path)
        archive_md5 = md5

    class Tampered(Local):
        archive_md5 = "0" * 32

    with pytest.raises(RuntimeError, match="has MD5 {}, expected 0+; not used".format(md5)):
        Tampered(tmp_path / "bad", train=True, download=True)
    assert os.listdir(str(tmp_path / "bad")) == []
    data = Local(tmp_path / "good", train=True, download=True)
    assert len(data) == 50 and os.path.isdir(str(tmp_path / "good" / "cifar-10-batches-py"))


def test_random_crop_transform():
    np.random.seed(1)
    image = np.random.rand(32, 32, 3)
    assert np.array_equal(random_crop_transform(image, 0), image)
    crops = [random_crop_transform(image, 4) for _ in range(20)]
    assert all(c.shape == image.shape for c in crops)
    assert any(not np.array_equal(c, image) for c in crops)


def test_cifar_loaders(tmp_path):
    write_cifar10(tmp_path)
    train_loader, val_loader = get_cifar_data_loaders(CIFAR10, str(tmp_path), max_epoch=7, batch_size=4, workers=0)
    batches = list(train_loader)
    assert len(batches) == 7 == len(train_loader)
    assert all(x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (4,) for x, y in batches)
    # validation: mean-subtracted test images, not augmented, so the same every time
    first, second = list(val_loader), list(val_loader)
    assert len(first) == 5
    for (x1, y1), (x2, y2) in zip(first, second):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    data = CIFAR10(tmp_path, train=False)
    train = CIFAR10(tmp_path, train=True)
    mean = np.concatenate([train.data, data.data]).astype(np.float64).mean(axis=0)
    expected = torch.from_numpy((data.data[0] - mean).transpose(2, 0, 1).astype(np.float32))
    assert torch.allclose(first[0][0][0], expected, atol=1e-4)


@pytest.mark.parametrize("nsamples,size", [(15, 10), (3, 10), (20, 10), (0, 4), (np.int64(7), 3)])
def test_sampler_covers_every_index_per_pass(nsamples, size):
    torch.manual_seed(0)
    sampler = NSamplesRandomSampler(list(range(size)), nsamples)
    drawn = list(sampler)
    assert len(drawn) == len(sampler) == int(nsamples)
    for start in range(0, len(drawn) - len(drawn) % size, size):
        assert sorted(drawn[start:start + size]) == list(range(size))
    assert len(set(drawn[len(drawn) - len(drawn) % size:])) == len(drawn) % size


def test_sampler_last_pass_draws_from_the_whole_set():
    """MemCNN's last, partial pass draws only among the first nsamples % len indices."""
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        seen.update(list(NSamplesRandomSampler(list(range(10)), 13))[10:])
    assert seen - {0, 1, 2}


def test_sampler_on_an_empty_data_set():
    with pytest.raises(ValueError, match="empty data set"):
        list(NSamplesRandomSampler([], 3))


def write_idx(path, magic, array):
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(str(path), "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_from_a_folder_and_its_errors(tmp_path):
    images = np.arange(3 * 28 * 28).reshape(3, 28, 28) % 256
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 2051, images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2049, np.array([0, 9, 4]))
    data = fashion_mnist.FashionMNIST(str(tmp_path), train=False)
    assert data.folder == str(tmp_path) and data.targets == [0, 9, 4]
    image, label = data[1]
    assert image.shape == (28, 28, 1) and np.array_equal(image[:, :, 0], images[1]) and label == 9
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2049, np.array([0, 9]))
    with pytest.raises(RuntimeError, match="disagree: 3 images, 2 labels"):
        fashion_mnist.FashionMNIST(str(tmp_path), train=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", 2051, np.array([0, 9, 4]))
    with pytest.raises(RuntimeError, match="magic number 2051, expected 2049"):
        fashion_mnist.FashionMNIST(str(tmp_path), train=False)


def test_fashion_mnist_missing_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(RuntimeError, match="dataset-fashion-mnist"):
        fashion_mnist.FashionMNIST(str(tmp_path), train=True)


@pytest.mark.skipif(not os.path.isdir(fashion_mnist.DEBIAN_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed (scripts/install-deps.sh installs it)")
def test_fashion_mnist_from_debians_package(tmp_path):
    test = fashion_mnist.FashionMNIST(str(tmp_path), train=False)
    assert test.folder == fashion_mnist.DEBIAN_DIR
    assert test.data.shape == (10000, 28, 28) and sorted(set(test.targets)) == list(range(10))
    train_loader, val_loader = fashion_mnist.get_fashion_mnist_data_loaders(
        fashion_mnist.FashionMNIST, str(tmp_path), max_epoch=2, batch_size=8, workers=0)
    x, y = next(iter(train_loader))
    assert x.shape == (8, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(val_loader) == 1250
