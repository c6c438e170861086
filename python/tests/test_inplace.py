"""An in-place operation on a tensor a memory-saving block rebuilds from is an error (as autograd
raises for its own saved tensors), never silently wrong gradients; where backward does not need the
modified tensor, the gradients equal the plain computation's."""

import pytest
import torch
import torch.nn as nn

import memcnn

IN_PLACE = {
    "mul_": lambda y: y.mul_(2),
    "relu_": lambda y: y.relu_(),
    "add_": lambda y: y.add_(1),
    "ReLU(inplace=True)": lambda y: nn.ReLU(inplace=True)(y),
}


def conv_tanh():
    return nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.Tanh())


def gradients(module, x, op):
    module.zero_grad()
    leaf = x.detach().clone().requires_grad_()
    y = module(leaf * 1.0)
    if op is not None:
        op(y)
    (y ** 2).sum().backward()
    return [leaf.grad.clone()] + [p.grad.clone() for p in module.parameters()]


def worst(a, b):
    return max((u - v).abs().max().item() for u, v in zip(a, b))


def coupling(kind):
    if kind == "additive":
        return memcnn.AdditiveCoupling(Fm=conv_tanh())
    return memcnn.AffineCoupling(Fm=conv_tanh(), adapter=memcnn.AffineAdapterNaive)


@pytest.mark.parametrize("kind", ["additive", "affine"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("op", sorted(IN_PLACE))
def test_wrapper_output_modified_in_place(kind, fused, op):
    torch.manual_seed(0)
    block = coupling(kind).double()
    x = torch.rand(2, 4, 6, 6, dtype=torch.float64)
    saving = memcnn.InvertibleModuleWrapper(fn=block, keep_input=False, fused_backward=fused)
    with pytest.raises(RuntimeError, match="modified by an inplace operation.*output 0"):
        gradients(saving, x, IN_PLACE[op])

    # keep_input: backward recomputes from the input and never reads the modified output.
    kept = memcnn.InvertibleModuleWrapper(fn=block, keep_input=True, fused_backward=fused)
    plain = memcnn.InvertibleModuleWrapper(fn=block, disable=True)
    assert worst(gradients(kept, x, IN_PLACE[op]), gradients(plain, x, IN_PLACE[op])) < 1e-12


def test_sequential_output_modified_in_place():
    torch.manual_seed(0)
    chain = memcnn.InvertibleSequential(*[memcnn.AdditiveCoupling(Fm=conv_tanh()) for _ in range(3)]).double()
    saving = memcnn.InvertibleModuleWrapper(fn=chain, keep_input=False)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        gradients(saving, torch.rand(2, 4, 6, 6, dtype=torch.float64), IN_PLACE["relu_"])


def test_in_place_between_two_reversible_blocks():
    torch.manual_seed(0)
    first = memcnn.InvertibleModuleWrapper(fn=memcnn.AdditiveCoupling(Fm=conv_tanh()), keep_input=False)
    second = memcnn.InvertibleModuleWrapper(fn=memcnn.AdditiveCoupling(Fm=conv_tanh()), keep_input=False)
    model = nn.Sequential(first, nn.ReLU(inplace=True), second).double()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        gradients(model, torch.rand(2, 4, 6, 6, dtype=torch.float64), None)


def test_kept_input_modified_after_forward():
    torch.manual_seed(0)
    w = memcnn.InvertibleModuleWrapper(fn=memcnn.AdditiveCoupling(Fm=conv_tanh()), keep_input=True).double()
    x = torch.rand(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    inp = x * 1.0
    y = w(inp)
    inp.mul_(3)
    with pytest.raises(RuntimeError, match="modified by an inplace operation.*input 0"):
        y.sum().backward()


def test_checkpoint_output_modified_equals_plain_and_input_modified_raises():
    torch.manual_seed(0)
    # Convolution and BatchNorm save their inputs, not their outputs: plain autograd allows
    # modifying the output in place, and so does the checkpoint.
    net = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)).double()
    x = torch.rand(2, 4, 6, 6, dtype=torch.float64)

    class Checkpointed(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, t):
            return memcnn.checkpoint(self.inner, t)

    for op in ("mul_", "add_", "relu_"):
        a = gradients(Checkpointed(net), x, IN_PLACE[op])
        b = gradients(net, x, IN_PLACE[op])
        assert worst(a, b) < 1e-12, op

    inp = x.clone().requires_grad_() * 1.0
    y = memcnn.checkpoint(net, inp)
    inp.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


# Parameters changed in place between forward and backward: backward runs the block again with its
# parameters, so it raises as plain autograd does (convolution saves its weight) instead of
# differentiating with the changed weights.

class CheckpointedNet(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def forward(self, t):
        return memcnn.checkpoint(self.inner, t, num_bwd_passes=2)


def saving_block(kind):
    torch.manual_seed(0)
    if kind == "checkpoint":
        return CheckpointedNet(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.Tanh())).double()
    if kind == "sequential":
        fn = memcnn.InvertibleSequential(*[memcnn.AdditiveCoupling(Fm=conv_tanh()) for _ in range(2)])
        return memcnn.InvertibleModuleWrapper(fn=fn, keep_input=False, num_bwd_passes=2).double()
    fused = kind != "recompute"
    return memcnn.InvertibleModuleWrapper(fn=coupling("affine"), keep_input=kind == "keep_input",
                                          num_bwd_passes=2, fused_backward=fused).double()


def change_parameters(module, loss, how):
    if how == "step_between_backward_passes":
        loss.backward(retain_graph=True)
        torch.optim.SGD(module.parameters(), lr=0.1).step()
    elif how == "clamp":
        with torch.no_grad():
            for p in module.parameters():
                p.clamp_(-0.05, 0.05)
    else:  # averaging, as SWA or an EMA would
        with torch.no_grad():
            for p in module.parameters():
                p.mul_(0.5).add_(torch.ones_like(p), alpha=0.5)


BLOCKS = ["fused", "recompute", "keep_input", "sequential", "checkpoint"]


@pytest.mark.parametrize("kind", BLOCKS)
@pytest.mark.parametrize("how", ["step_between_backward_passes", "clamp", "averaging"])
def test_parameter_changed_between_forward_and_backward_raises(kind, how):
    module = saving_block(kind)
    loss = (module(torch.rand(2, 4, 6, 6, dtype=torch.float64, requires_grad=True) * 1.0) ** 2).sum()
    change_parameters(module, loss, how)
    # Named as Python names it (LibTorch's names have no dots: 0.weight is 0/weight).
    with pytest.raises(RuntimeError, match=r"modified by an inplace operation: parameter '[^']*0/weight'"):
        loss.backward()


def gradients_of_step(module, x, passes):
    module.zero_grad()
    leaf = x.detach().clone().requires_grad_()
    loss = (module(leaf * 1.0) ** 2).sum()
    for i in range(passes):
        loss.backward(retain_graph=i + 1 < passes)
    return [leaf.grad.clone()] + [p.grad.clone() for p in module.parameters()]


def plain_of(module):
    if isinstance(module, CheckpointedNet):
        return module.inner
    return memcnn.InvertibleModuleWrapper(fn=module._fn, disable=True)


@pytest.mark.parametrize("kind", BLOCKS)
def test_unchanged_parameters_and_a_step_after_backward_equal_plain(kind):
    module = saving_block(kind)
    plain = plain_of(module)
    x = torch.rand(2, 4, 6, 6, dtype=torch.float64)
    assert worst(gradients_of_step(module, x, 2), gradients_of_step(plain, x, 2)) < 1e-10
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    for _ in range(2):
        assert worst(gradients_of_step(module, x, 1), gradients_of_step(plain, x, 1)) < 1e-10
        optimizer.step()
