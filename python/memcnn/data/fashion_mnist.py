"""Fashion-MNIST for `python -m memcnn.train MODEL fashion-mnist` (memcnn's, beyond MemCNN): 60000
training and 10000 test images of 28 x 28 grey levels in 10 classes, read from the IDX files that
Debian's dataset-fashion-mnist package installs, so nothing is downloaded.

FashionMNIST(root) looks for train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte
and t10k-labels-idx1-ubyte (each gzip'd, .gz, or not) in root, root/fashion-mnist,
root/FashionMNIST/raw (torchvision's layout), then /usr/share/datasets/fashion-mnist (Debian's;
`apt-get install dataset-fashion-mnist`), the same place memcnn-train reads it from."""

import gzip
import os

import numpy as np
from torch.utils.data import Dataset

from memcnn.data.cifar import _data_loaders

DEBIAN_DIR = '/usr/share/datasets/fashion-mnist'
_FILES = {True: ('train-images-idx3-ubyte', 'train-labels-idx1-ubyte'),
          False: ('t10k-images-idx3-ubyte', 't10k-labels-idx1-ubyte')}
_CLASSES = 10


def _candidates(root):
    folders = []
    if root:
        root = os.path.expanduser(str(root))
        folders += [root, os.path.join(root, 'fashion-mnist'), os.path.join(root, 'FashionMNIST', 'raw')]
    return folders + [DEBIAN_DIR]


def _find(folder, name):
    for path in (os.path.join(folder, name + '.gz'), os.path.join(folder, name)):
        if os.path.isfile(path):
            return path
    return None


def _read_idx(path, magic, dims):
    opener = gzip.open if path.endswith('.gz') else open
    with opener(path, 'rb') as f:
        raw = f.read()
    header = 4 + 4 * dims
    if len(raw) < header:
        raise RuntimeError("Fashion-MNIST file {} is truncated: {} bytes".format(path, len(raw)))
    found = int.from_bytes(raw[:4], 'big')
    if found != magic:
        raise RuntimeError("Fashion-MNIST file {} has magic number {}, expected {}".format(path, found, magic))
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], 'big') for i in range(dims))
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise RuntimeError("Fashion-MNIST file {} is truncated: its header promises {} values, it holds {}"
                           .format(path, count, len(raw) - header))
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


class FashionMNIST(Dataset):
    """Fashion-MNIST from its IDX files (10 classes of 28 x 28 grey images), found as the module describes.

    Args:
        root (str, optional): the first folder to look in; None looks only in Debian's folder.
        train (bool): the 60000 training images (True) or the 10000 test images.
        transform (callable, optional): applied to each image (a 28 x 28 x 1 uint8 numpy array).
        target_transform (callable, optional): applied to each label (an int).
        download (bool): ignored; nothing is downloaded.

    Raises:
        RuntimeError: when the files are found nowhere, are truncated, have the wrong magic number,
            disagree in length, or hold a label outside [0, 10).
    """

    def __init__(self, root=None, train=True, transform=None, target_transform=None, download=False):
        """Fashion-MNIST's training (train=True) or test set, found as the module describes (never
        downloaded; `download` is accepted for the data loaders' interface). Items are (image: 28 x 28 x 1
        uint8 numpy array after `transform`, label: int after target_transform); attributes data
        (N x 28 x 28 uint8), targets (list of int) and folder (where the files were found)."""
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        image_name, label_name = _FILES[bool(train)]
        searched = _candidates(root)
        for folder in searched:
            image_path, label_path = _find(folder, image_name), _find(folder, label_name)
            if image_path and label_path:
                break
        else:
            raise RuntimeError("Fashion-MNIST not found: {} and {} (gzip'd or not) are in none of {}. Install "
                               "Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist) or put the "
                               "files in one of those folders.".format(image_name, label_name, ", ".join(searched)))
        self.folder = folder
        self.data = _read_idx(image_path, 2051, 3)
        labels = _read_idx(label_path, 2049, 1).astype(np.int64)
        if len(labels) != len(self.data):
            raise RuntimeError("Fashion-MNIST files {} and {} disagree: {} images, {} labels".format(
                image_path, label_path, len(self.data), len(labels)))
        bad = np.flatnonzero(labels >= _CLASSES)
        if bad.size:
            raise RuntimeError("Fashion-MNIST file {}: label {} of image {} is out of range [0, {})".format(
                label_path, labels[bad[0]], bad[0], _CLASSES))
        self.targets = labels.tolist()

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        image, target = self.data[index][:, :, None], self.targets[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target


def get_fashion_mnist_data_loaders(dataset, data_dir, max_epoch, batch_size, workers):
    """get_cifar_data_loaders' loaders for 28 x 28 images (the same augmentation: mean image
    subtraction, random crop of the image zero-padded by 2, random left-right flip)."""
    return _data_loaders(dataset, data_dir, max_epoch, batch_size, workers, img_size=(28, 28))
