"""Modules and reference computations shared by the tests."""

import copy

import torch
import torch.nn as nn


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
