"""Memory, in bytes from memcnn's counting allocator: inputs are freed in forward and rebuilt in
backward; the activation memory of a wrapped stack stays flat in depth; and the places where MemCNN
is wrong: BatchNorm statistics updated more than once, an input saved by another operation (MemCNN
#70: ReLU before a block), torch.autograd.grad."""

import copy

import pytest
import torch
import torch.nn as nn

import memcnn
from helpers import ConvBnRelu, relative_error


def stack(depth, wrap):
    torch.manual_seed(0)
    blocks = [memcnn.AdditiveCoupling(ConvBnRelu(8), ConvBnRelu(8)) for _ in range(depth)]
    if wrap:
        blocks = [memcnn.InvertibleModuleWrapper(b) for b in blocks]
    return nn.Sequential(*blocks)


def peak_of_step(model, x):
    xin = x.clone().requires_grad_()
    with memcnn.MemoryProbe() as probe:
        model(xin * 1.0).sum().backward()
    return probe.peak_above_start()


def test_importing_memcnn_switched_cpu_tracking_on():
    assert memcnn.cpu_memory_tracking_enabled()
    with memcnn.MemoryProbe() as probe:
        t = torch.empty(1000, dtype=torch.float32)
        assert probe.current_above_start() == 4000
        del t
    assert probe.peak_above_start() == 4000


def test_probes_nest_and_reset_peak_memory_leaves_them_alone():
    with memcnn.MemoryProbe() as outer:
        held = torch.empty(1000, dtype=torch.float32)  # 4000 bytes
        torch.empty(5000, dtype=torch.float32)  # 20000 bytes, freed at once
        with memcnn.MemoryProbe() as inner:
            assert outer.peak_above_start() == 24000
            torch.empty(10000, dtype=torch.float32)
            memcnn.reset_peak_memory()
            stats = memcnn.memory_stats()
            assert stats["peak_bytes"] == stats["current_bytes"]
        assert inner.peak_above_start() == 40000
        assert outer.peak_above_start() == 44000
        del held
    assert outer.current_above_start() == 0


def test_activation_memory_is_flat_in_depth():
    x = torch.rand(8, 16, 16, 16)
    peaks = {}
    for depth in (2, 8):
        for wrap in (False, True):
            model = stack(depth, wrap)
            peak_of_step(model, x)  # warm-up (gradient buffers)
            for p in model.parameters():
                p.grad = None
            peaks[(depth, wrap)] = peak_of_step(model, x)
    one_tensor = x.numel() * x.element_size()
    # plain: grows with depth by several tensors per block
    assert peaks[(8, False)] - peaks[(2, False)] > 6 * 2 * one_tensor
    # memory saving: the deeper stack costs only its parameters' gradients more
    param_bytes = sum(p.numel() * p.element_size() for p in stack(8, True).parameters())
    assert peaks[(8, True)] - peaks[(2, True)] < one_tensor + param_bytes
    print(peaks)
    assert peaks[(8, True)] < peaks[(8, False)] / 3


def test_input_freed_and_rebuilt():
    w = memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(ConvBnRelu(2)))
    x = torch.rand(2, 4, 5, 5, requires_grad=True) * 1.0
    x.retain_grad()
    keep = x.detach().clone()
    y = w(x)
    assert memcnn.is_freed(x)
    assert x.storage().size() == 0  # MemCNN's way to see a freed input
    with pytest.raises(RuntimeError, match="storage"):
        x + 1  # an error, where MemCNN's resize_(0) crashes the process
    y.sum().backward()
    assert not memcnn.is_freed(x)
    assert torch.allclose(x.detach(), keep, atol=1e-6)
    assert x.grad is not None


def test_kept_with_keep_input_and_in_eval_and_no_grad():
    w = memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(ConvBnRelu(2)), keep_input=True)
    x = torch.rand(2, 4, 5, 5, requires_grad=True) * 1.0
    w(x)
    assert not memcnn.is_freed(x)
    w.keep_input = False
    w.eval()
    w(x)
    assert not memcnn.is_freed(x)
    w.train()
    with torch.no_grad():
        w(x)
    assert not memcnn.is_freed(x)


def test_batchnorm_statistics_updated_once():
    coupling = memcnn.AdditiveCoupling(ConvBnRelu(2), ConvBnRelu(2))
    plain = copy.deepcopy(coupling)
    w = memcnn.InvertibleModuleWrapper(coupling)
    x = torch.rand(4, 4, 5, 5)
    w(x.clone().requires_grad_() * 1.0).sum().backward()
    plain(x.clone().requires_grad_()).sum().backward()
    for a, b in zip(coupling.buffers(), plain.buffers()):
        assert torch.allclose(a.float(), b.float(), atol=1e-7)
    assert coupling.Fm.seq[1].num_batches_tracked.item() == 1


@pytest.mark.parametrize("fused", [True, False])
def test_input_saved_by_a_relu_memcnn_issue_70(fused):
    # A ReLU saves its output for backward; that output is the block's input. MemCNN frees it
    # anyway (storage().resize_(0)) and refills it with set_(), which crashes on current PyTorch
    # ("modified by an inplace operation") or corrupts the ReLU's gradient. memcnn keeps it.
    torch.manual_seed(3)
    stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
    coupling = memcnn.AdditiveCoupling(ConvBnRelu(2), ConvBnRelu(2))
    plain = nn.Sequential(copy.deepcopy(stem), copy.deepcopy(coupling)).double()
    saving = nn.Sequential(stem, memcnn.InvertibleModuleWrapper(coupling, fused_backward=fused)).double()
    x = torch.rand(2, 3, 6, 6, dtype=torch.float64)
    plain(x).pow(2).sum().backward()
    saving(x).pow(2).sum().backward()
    for p, q in zip(plain.parameters(), saving.parameters()):
        assert relative_error(q.grad, p.grad) < 1e-10


def test_torch_autograd_grad_works():
    # MemCNN: "InvertibleCheckpointFunction is not compatible with .grad()".
    coupling = memcnn.AdditiveCoupling(ConvBnRelu(2), ConvBnRelu(2)).double()
    plain = copy.deepcopy(coupling)
    w = memcnn.InvertibleModuleWrapper(coupling)
    x = torch.rand(2, 4, 5, 5, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ga = torch.autograd.grad(w(xa * 1.0).pow(2).sum(), [xa] + list(coupling.parameters()))
    gb = torch.autograd.grad(plain(xb).pow(2).sum(), [xb] + list(plain.parameters()))
    assert relative_error(torch.cat([g.reshape(-1) for g in ga]), torch.cat([g.reshape(-1) for g in gb])) < 1e-10
    assert all(p.grad is None for p in coupling.parameters())
