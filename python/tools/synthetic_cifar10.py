"""A small synthetic CIFAR-10 for runs without the network: random images and labels (seeded) written
in the official "python version" layout (root/cifar-10-batches-py/data_batch_1..5, test_batch: pickled
dicts of 'data' uint8 [N, 3072] and 'labels'), which torchvision and MemCNN read, and in the "binary
version" layout (root/cifar-10-batches-bin/*.bin: records of a label byte and 3072 image bytes), which
memcnn-train reads; both hold the same images and labels. Also a torchvision CIFAR10 that reads such
a folder without checksums or download (MemCNN 1.5.2 asks torchvision for download=True).

Shared by run_memcnn_suite.py, memcnn_weights_roundtrip.py and the pytest suite's helpers."""

import os
import pickle  # nosec: writes the python version's pickles; reads only what this module wrote

import numpy as np

LAYOUT_FOLDERS = {"python": "cifar-10-batches-py", "binary": "cifar-10-batches-bin"}
IMAGE_BYTES = 3 * 32 * 32


def write(root, per_batch=10, test=20, seed=0, layouts=("python",)):
    """Writes five training batches of per_batch images and a test batch of `test` images into root in
    each of `layouts` ("python", "binary"). The images and labels depend on seed, per_batch and test
    only. Returns (train images [N, 32, 32, 3], train labels, test images, test labels) as numpy arrays."""
    unknown = set(layouts) - set(LAYOUT_FOLDERS)
    if unknown:
        raise ValueError("unknown CIFAR-10 layout(s) {}; use {}".format(sorted(unknown), sorted(LAYOUT_FOLDERS)))
    rng = np.random.RandomState(seed)
    for layout in layouts:
        os.makedirs(os.path.join(str(root), LAYOUT_FOLDERS[layout]), exist_ok=True)
    result = {True: ([], []), False: ([], [])}
    names = [("data_batch_{}".format(i), per_batch, True) for i in range(1, 6)] + [("test_batch", test, False)]
    for name, count, train in names:
        data = rng.randint(0, 256, size=(count, IMAGE_BYTES)).astype(np.uint8)
        labels = rng.randint(0, 10, size=count)
        if "binary" in layouts:
            records = np.concatenate([labels.astype(np.uint8)[:, None], data], axis=1)
            records.tofile(os.path.join(str(root), LAYOUT_FOLDERS["binary"], name + ".bin"))
        if "python" in layouts:
            with open(os.path.join(str(root), LAYOUT_FOLDERS["python"], name), "wb") as f:
                pickle.dump({"batch_label": name, "data": data, "labels": labels.tolist()}, f)
        result[train][0].append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        result[train][1].append(labels)
    return (np.concatenate(result[True][0]), np.concatenate(result[True][1]),
            np.concatenate(result[False][0]), np.concatenate(result[False][1]))


def read_binary(root, train):
    """The binary layout's images [N, 3, 32, 32] (uint8) and labels [N] (int64) as memcnn-train reads
    them: data_batch_1..5.bin in order, or test_batch.bin."""
    names = ["data_batch_{}.bin".format(i) for i in range(1, 6)] if train else ["test_batch.bin"]
    records = np.concatenate([np.fromfile(os.path.join(str(root), LAYOUT_FOLDERS["binary"], name), dtype=np.uint8)
                              for name in names]).reshape(-1, 1 + IMAGE_BYTES)
    return records[:, 1:].reshape(-1, 3, 32, 32), records[:, 0].astype(np.int64)


def offline_cifar10_class(fixed_root=None):
    """torchvision's CIFAR10 reading the synthetic set: no checksums, no download, class names made up.
    With fixed_root, every instance reads that folder whatever root it is given (for tests that name
    their own root)."""
    import torchvision.datasets.cifar

    class OfflineCIFAR10(torchvision.datasets.cifar.CIFAR10):
        def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
            super().__init__(fixed_root or root, train=train, transform=transform,
                             target_transform=target_transform, download=False)

        def _check_integrity(self):
            return True

        def _load_meta(self):
            self.classes = ["class{}".format(i) for i in range(10)]
            self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    return OfflineCIFAR10


def patch_torchvision(root):
    """Makes torchvision.datasets.CIFAR10 read the synthetic set in root, whatever root it is given."""
    import torchvision.datasets
    import torchvision.datasets.cifar

    offline = offline_cifar10_class(fixed_root=root)
    torchvision.datasets.CIFAR10 = offline
    torchvision.datasets.cifar.CIFAR10 = offline


def __getattr__(name):
    # "synthetic_cifar10.OfflineCIFAR10" in an experiments file (MemCNN's factory imports classes by
    # name) without importing torchvision whenever this module is imported.
    if name == "OfflineCIFAR10":
        return offline_cifar10_class()
    raise AttributeError("module {!r} has no attribute {!r}".format(__name__, name))
