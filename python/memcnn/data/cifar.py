"""CIFAR-10/100 for training (MemCNN's memcnn.data.cifar): get_cifar_data_loaders and its
augmentation (mean image subtraction, random crop of the zero-padded image, random left-right
flip), and CIFAR10/CIFAR100 data sets that need no torchvision.

The data sets read CIFAR from `root` in either of its two official forms, so that a folder prepared
for torchvision or for memcnn-train (the C++ trainer) serves as it is:
  - the "python version": root/cifar-10-batches-py/{data_batch_1..5,test_batch} (torchvision's layout;
    CIFAR-100: root/cifar-100-python/{train,test});
  - the "binary version": root/cifar-10-batches-bin/{data_batch_1..5,test_batch}.bin (memcnn-train's;
    CIFAR-100: root/cifar-100-binary/{train,test}.bin).
Files in place are checked for size, type and label range (not for their checksum: a data set of
your own in this format is welcome). When neither is there and download=True, the python version's
archive is downloaded from the CIFAR page, its MD5 checked, and extracted into root; offline, the
error says which files to put where.

Differences from MemCNN 1.5.2: the validation loader is not augmented (MemCNN crops and flips the
test images at random too, which makes its test accuracy vary from run to run); images are
converted with numpy instead of per-pixel Python (the same values, faster); pin_memory only
where CUDA is available."""

import functools
import hashlib
import logging
import os
import pickle  # nosec: the python version of CIFAR is a set of pickles, as published
import tarfile
import tempfile
import urllib.request

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from memcnn.data.sampling import NSamplesRandomSampler

logger = logging.getLogger('data')


# ---- MemCNN's augmentation, one image (H x W x C numpy array) at a time ----

def random_crop_transform(x, crop_size=3, img_size=(32, 32)):
    """A random img_size window of x zero-padded by (crop_size + 1) // 2 on each side, its offsets
    drawn from 0..crop_size in each direction (np.random)."""
    pad = (crop_size + 1) // 2
    padded = np.pad(x, ((pad, pad), (pad, pad), (0, 0)), mode='constant')
    sx, sy = np.random.randint(crop_size + 1), np.random.randint(crop_size + 1)
    return padded[sx:sx + img_size[0], sy:sy + img_size[1], :]


def tonumpy_fn(x):
    """An image (PIL or array) as an H x W x C numpy array."""
    array = np.asarray(x)
    return array[:, :, None] if array.ndim == 2 else array


def random_lr_flip_fn(x):
    """x flipped left-right with probability 1/2 (np.random)."""
    return np.copy(x[:, ::-1, :]) if np.random.random() >= 0.5 else x


def mean_subtract_fn(x, mean=0):
    """Returns x as float32 minus `mean` (the mean image, or a number)."""
    return x.astype(np.float32) - mean


def reformat_fn(x):
    """H x W x C to C x H x W float32."""
    return x.transpose(2, 0, 1).astype(np.float32)


class _Compose(object):
    """Applies functions in order (picklable, for DataLoader workers)."""

    def __init__(self, *functions):
        self.functions = functions

    def __call__(self, x):
        for function in self.functions:
            x = function(x)
        return x


def _images(data_set, train):
    """The uint8 images of a data set as N x H x W x C: MemCNN's train_data/test_data (older
    torchvision) or data."""
    legacy = 'train_data' if train else 'test_data'
    images = getattr(data_set, legacy) if hasattr(data_set, legacy) else data_set.data
    images = np.asarray(images)
    return images[..., None] if images.ndim == 3 else images


def _data_loaders(dataset, data_dir, max_epoch, batch_size, workers, img_size):
    train_set = dataset(root=data_dir, train=True, download=True)
    valid_set = dataset(root=data_dir, train=False, download=True)

    # the mean image over training and test images, as MemCNN computes it
    images = (_images(train_set, True), _images(valid_set, False))
    count = sum(len(i) for i in images)
    mean_img = sum(i.sum(axis=0, dtype=np.float64) for i in images) / count
    subtract = functools.partial(mean_subtract_fn, mean=mean_img)
    crop = functools.partial(random_crop_transform, img_size=img_size)

    train_set.transform = _Compose(tonumpy_fn, subtract, crop, random_lr_flip_fn, reformat_fn, torch.from_numpy)
    valid_set.transform = _Compose(tonumpy_fn, subtract, reformat_fn, torch.from_numpy)
    # max_epoch counts iterations (MemCNN's naming): max_epoch batches of batch_size samples
    sampler = NSamplesRandomSampler(train_set, max_epoch * batch_size)
    pin = torch.cuda.is_available()
    train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=False, sampler=sampler, num_workers=workers,
                              pin_memory=pin)
    val_loader = DataLoader(valid_set, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=pin)
    return train_loader, val_loader


def get_cifar_data_loaders(dataset, data_dir, max_epoch, batch_size, workers):
    """(train_loader, val_loader) of dataset(root=data_dir, train=..., download=True): the training
    loader yields max_epoch batches (max_epoch counts iterations, as in MemCNN's experiments) of
    augmented, mean-subtracted images (float32, C x H x W) drawn by NSamplesRandomSampler; the
    validation loader the test images, mean-subtracted, in order."""
    return _data_loaders(dataset, data_dir, max_epoch, batch_size, workers, img_size=(32, 32))


# ---- CIFAR readers ----

def _md5(path):
    digest = hashlib.md5()  # nosec: a checksum of a published archive, not security
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


class _CIFAR(Dataset):
    title = None
    python_folder = None
    python_train = ()
    python_test = ()
    binary_folder = None
    binary_train = ()
    binary_test = ()
    label_key = None
    label_bytes = 1          # binary records: leading label bytes ...
    label_index = 0          # ... and the one that is the label
    num_classes = None
    archive = None
    archive_md5 = None
    url_base = 'https://www.cs.toronto.edu/~kriz/'

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        """CIFAR's training (train=True) or test images of `root` (see the module's description);
        items are (image: H x W x 3 uint8 numpy array after `transform`, label: int after
        target_transform). Attributes data (N x 32 x 32 x 3 uint8) and targets (list of int)."""
        self.root = os.path.expanduser(str(root))
        self.train = train
        self.transform = transform
        self.target_transform = target_transform
        if not self._present() and download:
            self.download()
        if self._has(self.python_folder, self._python_files()):
            self.data, self.targets = self._read_python()
        elif self._has(self.binary_folder, self._binary_files()):
            self.data, self.targets = self._read_binary()
        else:
            raise RuntimeError(self._missing_message())

    def _python_files(self):
        return self.python_train if self.train else self.python_test

    def _binary_files(self):
        return self.binary_train if self.train else self.binary_test

    def _has(self, folder, files):
        return all(os.path.isfile(os.path.join(self.root, folder, f)) for f in files)

    def _present(self):
        return (self._has(self.python_folder, self.python_train + self.python_test) or
                self._has(self.binary_folder, self.binary_train + self.binary_test))

    def _missing_message(self, reason=None):
        return ("{title} not found in {root}: expected the python version ({py}/ with {pyfiles}, from {archive}) or "
                "the binary version ({bin}/ with {binfiles}){reason}. Put the files there (or pass download=True "
                "where the internet is reachable; the archive is {url}{archive}, MD5 {md5})."
                .format(title=self.title, root=self.root, py=os.path.join(self.root, self.python_folder),
                        pyfiles=", ".join(self.python_train + self.python_test), archive=self.archive,
                        bin=os.path.join(self.root, self.binary_folder),
                        binfiles=", ".join(self.binary_train + self.binary_test),
                        reason="" if reason is None else "; " + reason, url=self.url_base, md5=self.archive_md5))

    def _check(self, path, images, labels):
        if len(images) != len(labels):
            raise RuntimeError("{} file {}: {} images but {} labels".format(self.title, path, len(images), len(labels)))
        bad = np.flatnonzero((labels < 0) | (labels >= self.num_classes))
        if bad.size:
            raise RuntimeError("{} file {}: label {} of image {} is out of range [0, {})"
                               .format(self.title, path, labels[bad[0]], bad[0], self.num_classes))

    def _read_python(self):
        images, labels = [], []
        for name in self._python_files():
            path = os.path.join(self.root, self.python_folder, name)
            with open(path, 'rb') as f:
                try:
                    batch = pickle.load(f, encoding='latin1')  # nosec
                except Exception as error:
                    raise RuntimeError("{} file {} is not a python-version CIFAR batch (a pickle): {}"
                                       .format(self.title, path, error)) from None
            if not isinstance(batch, dict):
                raise RuntimeError("{} file {} holds a {}, not a CIFAR batch (a dict)".format(
                    self.title, path, type(batch).__name__))
            batch = {k.decode('latin1') if isinstance(k, bytes) else k: v for k, v in batch.items()}
            if 'data' not in batch or self.label_key not in batch:
                raise RuntimeError("{} file {} has no 'data' or '{}' (keys: {})".format(
                    self.title, path, self.label_key, ", ".join(map(str, batch))))
            data = np.asarray(batch['data'])
            if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
                raise RuntimeError("{} file {}: 'data' must be uint8 rows of 3072 values, got {} {}".format(
                    self.title, path, data.dtype, data.shape))
            label = np.asarray(batch[self.label_key], dtype=np.int64)
            self._check(path, data, label)
            images.append(data)
            labels.append(label)
        data = np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(data), np.concatenate(labels).tolist()

    def _read_binary(self):
        record = self.label_bytes + 3 * 32 * 32
        images, labels = [], []
        for name in self._binary_files():
            path = os.path.join(self.root, self.binary_folder, name)
            raw = np.fromfile(path, dtype=np.uint8)
            if raw.size == 0 or raw.size % record:
                raise RuntimeError("{} file {} is truncated or not in the binary format: {} bytes is not a positive "
                                   "multiple of the record size {}".format(self.title, path, raw.size, record))
            rows = raw.reshape(-1, record)
            label = rows[:, self.label_index].astype(np.int64)
            self._check(path, rows, label)
            images.append(rows[:, self.label_bytes:])
            labels.append(label)
        data = np.concatenate(images).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return np.ascontiguousarray(data), np.concatenate(labels).tolist()

    def download(self):
        """Downloads the python version's archive into root, checks its MD5 and extracts it."""
        os.makedirs(self.root, exist_ok=True)
        url = self.url_base + self.archive
        handle, temporary = tempfile.mkstemp(prefix=self.archive + '.', dir=self.root)
        os.close(handle)
        try:
            logger.info('Downloading {} to {}'.format(url, self.root))
            try:
                urllib.request.urlretrieve(url, temporary)  # nosec: a fixed https URL
            except OSError as error:
                raise RuntimeError(self._missing_message("downloading {} failed: {}".format(url, error))) from None
            found = _md5(temporary)
            if found != self.archive_md5:
                raise RuntimeError("{}: the downloaded {} has MD5 {}, expected {}; not used".format(
                    self.title, url, found, self.archive_md5))
            with tarfile.open(temporary, 'r:gz') as archive:
                members = archive.getmembers()
                for member in members:
                    target = os.path.normpath(os.path.join(self.root, member.name))
                    if (not (member.isfile() or member.isdir()) or os.path.isabs(member.name) or
                            not target.startswith(os.path.normpath(self.root) + os.sep)):
                        raise RuntimeError("{}: {} holds an unexpected entry {!r}; not extracted".format(
                            self.title, url, member.name))
                safe = {'filter': 'data'} if hasattr(tarfile, 'data_filter') else {}  # Python >= 3.11.4
                archive.extractall(self.root, members=members, **safe)  # nosec: entries checked above
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        image, target = self.data[index], self.targets[index]
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target


class CIFAR10(_CIFAR):
    """CIFAR-10 (10 classes; 50000 training and 10000 test images of 32 x 32 x 3), without torchvision.

    Args:
        root (str): the folder holding the python or the binary version (see the module's description).
        train (bool): the training images (True) or the test images.
        transform (callable, optional): applied to each image (an H x W x 3 uint8 numpy array).
        target_transform (callable, optional): applied to each label (an int).
        download (bool): download and extract the python version into root when neither version is there.

    Raises:
        RuntimeError: when the files are missing (and not downloaded), malformed, or the download fails
            or its MD5 differs.
    """

    title = 'CIFAR-10'
    python_folder = 'cifar-10-batches-py'
    python_train = tuple('data_batch_{}'.format(i) for i in range(1, 6))
    python_test = ('test_batch',)
    binary_folder = 'cifar-10-batches-bin'
    binary_train = tuple('data_batch_{}.bin'.format(i) for i in range(1, 6))
    binary_test = ('test_batch.bin',)
    label_key = 'labels'
    num_classes = 10
    archive = 'cifar-10-python.tar.gz'
    archive_md5 = 'c58f30108f718f92721af3b95e74349a'


class CIFAR100(_CIFAR):
    """CIFAR-100 with its 100 fine labels (50000 training and 10000 test images), without torchvision.

    Arguments, attributes and errors as :class:`CIFAR10`.
    """

    title = 'CIFAR-100'
    python_folder = 'cifar-100-python'
    python_train = ('train',)
    python_test = ('test',)
    binary_folder = 'cifar-100-binary'
    binary_train = ('train.bin',)
    binary_test = ('test.bin',)
    label_key = 'fine_labels'
    label_bytes = 2          # coarse label, then the fine label
    label_index = 1
    num_classes = 100
    archive = 'cifar-100-python.tar.gz'
    archive_md5 = 'eb9058c3a382ffc7106e4002c42a8d85'
