"""Modules and reference computations shared by the tests."""

import copy
import os
import sys

import torch
import torch.nn as nn

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools")
sys.path.insert(0, TOOLS)
import synthetic_cifar10  # noqa: E402


class ConvBnRelu(nn.Module):
    """The F and G of the tests: Conv-BN-ReLU, optionally with dropout."""

    def __init__(self, channels, dropout=0.0, out_channels=None):
        super().__init__()
        out_channels = out_channels or channels
        layers = [nn.Conv2d(channels, out_channels, 3, padding=1), nn.BatchNorm2d(out_channels), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        self.seq = nn.Sequential(*layers)

    def forward(self, x):
        return self.seq(x)


def plain_additive(F, G, x, split_dim=1, inverse=False):
    x1, x2 = torch.chunk(x, 2, dim=split_dim)
    if not inverse:
        y1 = x1 + F(x2)
        y2 = x2 + G(y1)
    else:
        y2 = x2 - G(x1)
        y1 = x1 - F(y2)
        y1, y2 = y1, y2
    return torch.cat([y1, y2], dim=split_dim)


def plain_affine(F, G, x, inverse=False):
    x1, x2 = torch.chunk(x, 2, dim=1)
    if not inverse:
        h = F(x2)
        y1 = x1 * torch.exp(h) + h
        h = G(y1)
        y2 = x2 * torch.exp(h) + h
    else:
        h = G(x1)
        y2 = (x2 - h) / torch.exp(h)
        h = F(y2)
        y1 = (x1 - h) / torch.exp(h)
    return torch.cat([y1, y2], dim=1)


def relative_error(a, b):
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-30)
    return (a - b).abs().max().item() / scale


def twins(module):
    return module, copy.deepcopy(module)


def write_cifar10(root, per_batch=10, test=20, seed=0, binary=False):
    """A small synthetic CIFAR-10 in root, in the official python-version layout
    (root/cifar-10-batches-py/data_batch_1..5, test_batch: pickled dicts of 'data' uint8 [N, 3072] and
    'labels') or the binary one (root/cifar-10-batches-bin/*.bin: records of label byte + 3072 bytes).
    Returns (train images [N, 32, 32, 3], train labels, test images, test labels)."""
    return synthetic_cifar10.write(root, per_batch=per_batch, test=test, seed=seed,
                                   layouts=("binary",) if binary else ("python",))


def revnet38_state_keys():
    """A few state_dict keys of MemCNN 1.5.2's RevNet-38 (ResNet with RevBasicBlock), as its checkpoints
    name them."""
    return ["conv1.weight", "bn1.running_mean", "layer1.0.revblock._fn.Fm.conv1.weight",
            "layer1.0.revblock._fn.Gm.bn2.weight", "layer2.0.basicblock_sub.bn1.weight",
            "layer2.0.downsample.0.weight", "layer2.0.downsample.1.running_var",
            "layer3.2.revblock._fn.Fm.bn1.num_batches_tracked", "bn_final.weight", "fc.bias"]
