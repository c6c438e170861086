"""The iUNets library (Etmann et al., github.com/cetmann/iunets), written on MemCNN's
InvertibleModuleWrapper, run unchanged on this package: its iUNet in 2-D and 3-D, forward, inverse
and training steps with memory saving, gradients equal to those of its own non-saving mode
(disable_custom_gradient=True) and of the same modules with our wrapper disabled.

The library is not part of this repository: set MEMCNN_IUNETS_SRC to a checkout of it (the folder
that holds the `iunets` package), e.g.
    git clone https://github.com/cetmann/iunets /tmp/iunets
    MEMCNN_IUNETS_SRC=/tmp/iunets python3 -m pytest python/tests/test_iunets_library.py"""

import copy
import os
import sys
import warnings

import pytest
import torch

import memcnn
from helpers import relative_error

SOURCE = os.environ.get("MEMCNN_IUNETS_SRC")
if not SOURCE:
    pytest.skip("the iUNets library's tests need its source: set MEMCNN_IUNETS_SRC to a checkout of "
                "github.com/cetmann/iunets (the folder holding the iunets package)", allow_module_level=True)
if not os.path.isfile(os.path.join(SOURCE, "iunets", "networks.py")):
    pytest.skip("MEMCNN_IUNETS_SRC={} does not hold the iunets package (iunets/networks.py)".format(SOURCE),
                allow_module_level=True)
sys.path.insert(0, os.path.abspath(SOURCE))
from iunets import iUNet  # noqa: E402
import iunets.networks  # noqa: E402

# Its README's examples (2-D: the defaults but for channels, architecture and dim; 3-D: with odd
# channel counts, depth-3 blocks and a stride per level), at small spatial sizes; and the defaults
# in 3-D.
CONFIGS = {
    "readme-2d": (dict(channels=(64, 128, 256, 384), architecture=(2, 2, 2, 2), dim=2), (1, 64, 16, 16)),
    "readme-3d": (dict(channels=(7, 15, 35, 91), architecture=(2, 3, 1, 3), dim=3, module_kwargs={"depth": 3},
                       resampling_stride=[2, 2, (1, 2, 2)], learnable_resampling=True, resampling_init="haar",
                       resampling_method="cayley"), (1, 7, 8, 16, 16)),
    "defaults-3d": (dict(channels=(8, 16, 32), architecture=(2, 2, 2), dim=3), (2, 8, 8, 8, 8)),
    "fixed-resampling-2d": (dict(channels=(8, 16, 32), architecture=(1, 1, 1), dim=2, learnable_resampling=False,
                                 resampling_method="exp"), (2, 8, 16, 16)),
}


def build(name, dtype, **extra):
    kwargs, shape = CONFIGS[name]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = iUNet(**copy.deepcopy(kwargs), verbose=0, **extra)
    return net.to(dtype), shape


def wrappers(net):
    return [m for m in net.modules() if isinstance(m, memcnn.InvertibleModuleWrapper)]


def step(net, x, weight):
    net.zero_grad()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = net(x.clone())
        (y * weight).sum().backward()
    return y.detach(), [(n, p.grad) for n, p in net.named_parameters() if p.requires_grad]


def test_it_uses_this_package():
    assert iunets.networks.InvertibleModuleWrapper is memcnn.InvertibleModuleWrapper
    assert "+cpp" in memcnn.__version__  # this package, not MemCNN


@pytest.mark.parametrize("dtype,tolerance", [(torch.float64, 1e-10), (torch.float32, 1e-4)])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_gradients_with_memory_saving_equal_the_non_saving_modes(name, dtype, tolerance):
    net, shape = build(name, dtype)
    saving = [w for w in wrappers(net) if not w.disable]
    assert len(saving) >= 4  # its blocks, channel mixings, split and concatenation
    own_plain, _ = build(name, dtype, disable_custom_gradient=True)
    own_plain.load_state_dict(net.state_dict())
    ours_disabled = copy.deepcopy(net)
    for w in wrappers(ours_disabled):
        w.disable = True
    x = torch.randn(*shape, dtype=dtype)
    weight = torch.randn(*shape, dtype=dtype)
    y, grads = step(net, x, weight)
    for other in (own_plain, ours_disabled):
        y_other, grads_other = step(other, x, weight)
        assert relative_error(y, y_other) < tolerance
        assert [n for n, _ in grads] == [n for n, _ in grads_other]
        for (n, a), (_, b) in zip(grads, grads_other):
            assert a is not None and b is not None and b.abs().max() > 0, n
            assert relative_error(a, b) < tolerance, n


@pytest.mark.parametrize("name", ["readme-2d", "defaults-3d"])
def test_training_steps_follow_the_non_saving_run_and_stay_invertible(name):
    nets = [build(name, torch.float64)[0], build(name, torch.float64, disable_custom_gradient=True)[0]]
    nets[1].load_state_dict(nets[0].state_dict())
    shape = CONFIGS[name][1]
    x = torch.randn(*shape, dtype=torch.float64)
    target = torch.randn(*shape, dtype=torch.float64)
    losses = []
    for net in nets:
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
        losses.append([])
        for _ in range(3):
            optimizer.zero_grad()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loss = (net(x.clone()) - target).pow(2).mean()
            loss.backward()
            optimizer.step()
            losses[-1].append(loss.item())
    assert losses[0][0] != losses[0][-1]  # it trained
    for a, b in zip(*losses):
        assert abs(a - b) <= 1e-10 * abs(b)
    for (n, p), q in zip(nets[0].named_parameters(), nets[1].parameters()):
        assert relative_error(p, q) < 1e-10, n
    net = nets[0].eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = net(x)
        assert (net.inverse(y) - x).abs().max() < 1e-10


@pytest.mark.parametrize("name", ["readme-2d", "defaults-3d"])
def test_memory_saving_holds_less(name):
    def measure(disable):
        net, shape = build(name, torch.float32, disable_custom_gradient=disable)
        x = torch.randn(*shape)
        step(net, x, torch.ones(1))  # the parameters' .grad, outside the measurement
        with memcnn.MemoryProbe() as probe, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            y = net(x.clone())
            held = probe.current_above_start()
            y.sum().backward()
            del y
        return held, probe.peak_above_start(), x.numel() * 4

    held, peak, input_bytes = measure(False)
    plain_held, plain_peak, _ = measure(True)
    # Memory saving: the output and the skip connections' halves kept by iunets' own
    # non-wrapped learnable resampling (its choice: disable=learnable_resampling), far below a
    # full graph.
    assert held < 0.25 * plain_held
    assert peak < plain_peak
    assert held >= input_bytes
