"""Tutorial: migrating Python code from MemCNN to memcnn's Python package.

`import memcnn` gives MemCNN 1.5.2's names, arguments and defaults over memcnn's C++ core, so
MemCNN code runs unchanged (part 1, MemCNN's README example). Parts 2 to 5 show what behaves
differently, each checked:
  2. training: the freed input, the memory saved (measured in MiB), computing with a freed input
  3. BatchNorm running statistics in a wrapped block
  4. torch.autograd.grad through the wrapper
  5. eval() and torch.no_grad(): nothing is freed

Run it with Debian's interpreter and the package built by CMake:
    PYTHONPATH=build/python/site /usr/bin/python3 examples/migrating_from_memcnn.py
"""

import copy

import torch
import torch.nn as nn

import memcnn

torch.manual_seed(0)

# [readme]
# Part 1: MemCNN's README example, as MemCNN ships it: nothing changes but what is installed.


# define a new torch Module with a sequence of operations: Relu o BatchNorm2d o Conv2d
class ExampleOperation(nn.Module):
    def __init__(self, channels):
        super(ExampleOperation, self).__init__()
        self.seq = nn.Sequential(
                                    nn.Conv2d(in_channels=channels, out_channels=channels,
                                              kernel_size=(3, 3), padding=1),
                                    nn.BatchNorm2d(num_features=channels),
                                    nn.ReLU(inplace=True)
                                )

    def forward(self, x):
        return self.seq(x)


# generate some random input data (batch_size, num_channels, y_elements, x_elements)
X = torch.rand(2, 10, 8, 8)

# application of the operation(s) the normal way
model_normal = ExampleOperation(channels=10)
model_normal.eval()

Y = model_normal(X)

# turn the ExampleOperation invertible using an additive coupling
invertible_module = memcnn.AdditiveCoupling(
    Fm=ExampleOperation(channels=10 // 2),
    Gm=ExampleOperation(channels=10 // 2)
)

# test that it is actually a valid invertible module (has a valid inverse method)
assert memcnn.is_invertible_module(invertible_module, test_input_shape=X.shape)

# wrap our invertible_module using the InvertibleModuleWrapper and benefit from memory savings during training
invertible_module_wrapper = memcnn.InvertibleModuleWrapper(fn=invertible_module, keep_input=True, keep_input_inverse=True)

# by default the module is set to training, the following sets this to evaluation
# note that this is required to pass input tensors to the model with requires_grad=False (inference only)
invertible_module_wrapper.eval()

# test that the wrapped module is also a valid invertible module
assert memcnn.is_invertible_module(invertible_module_wrapper, test_input_shape=X.shape)

# compute the forward pass using the wrapper
Y2 = invertible_module_wrapper.forward(X)

# the input (X) can be approximated (X2) by applying the inverse method of the wrapper on Y2
X2 = invertible_module_wrapper.inverse(Y2)

# test that the input and approximation are similar
assert torch.allclose(X, X2, atol=1e-06)
print("part 1: MemCNN's README example runs unchanged")
# [readme]


# [training]
# Part 2: training with memory saving (keep_input=False, MemCNN's default). The wrapper frees the
# block's input after forward and rebuilds it from the output in backward. As with MemCNN, a freed
# input reports x.storage().size() == 0; unlike MemCNN (whose storage().resize_(0) leaves a tensor
# that crashes the process when used), computing with it raises a RuntimeError.
def stack(disable):
    torch.manual_seed(1)
    return nn.Sequential(*[
        memcnn.InvertibleModuleWrapper(
            memcnn.AdditiveCoupling(Fm=ExampleOperation(8), Gm=ExampleOperation(8)), disable=disable)
        for _ in range(6)])


def training_step_peak_bytes(model, x):
    # memcnn.MemoryProbe: allocator bytes above those live at its start (importing memcnn switched
    # CPU counting on). MemCNN had no CPU measure; its experiments read torch.cuda's statistics.
    with memcnn.MemoryProbe() as probe:
        model(x).sum().backward()
    return probe.peak_above_start()


x = torch.randn(8, 16, 32, 32)
plain_bytes = training_step_peak_bytes(stack(disable=True), x.clone())
saving_bytes = training_step_peak_bytes(stack(disable=False), x.clone())
mib = 2.0 ** 20
print("part 2: training step of 6 wrapped couplings: {:.2f} MiB without memory saving, {:.2f} MiB with"
      .format(plain_bytes / mib, saving_bytes / mib))
assert saving_bytes < plain_bytes, "memory saving saved nothing"

block = stack(disable=False)[0]
h = torch.randn(4, 16, 8, 8).mul(2)  # an activation computed inside the network
y = block(h)
assert memcnn.is_freed(h) and h.storage().size() == 0  # MemCNN's test for a freed input still holds
try:
    h + 1
    raise AssertionError("computing with a freed input should raise")
except RuntimeError as error:
    print("part 2: computing with a freed input raises RuntimeError:", str(error).splitlines()[0][:90])
y.sum().backward()  # rebuilds h from y
assert not memcnn.is_freed(h)
# [training]


# [batchnorm]
# Part 3: BatchNorm running statistics. MemCNN updates them three times per training step in a
# wrapped block (forward, inverse, recompute: its issue #12); here they end as after one plain forward.
coupling = memcnn.AdditiveCoupling(Fm=ExampleOperation(8), Gm=ExampleOperation(8))
reference = copy.deepcopy(coupling)  # the same block without a wrapper
wrapped = memcnn.InvertibleModuleWrapper(coupling)
x = torch.randn(4, 16, 8, 8)
wrapped(x.clone()).sum().backward()
reference(x.clone()).sum().backward()
difference = (coupling.Fm.seq[1].running_mean - reference.Fm.seq[1].running_mean).abs().max().item()
print("part 3: BatchNorm running mean after one step differs from a plain forward's by {:.1e}".format(difference))
assert difference < 1e-6
# [batchnorm]


# [grad]
# Part 4: torch.autograd.grad through the wrapper. MemCNN raises "InvertibleCheckpointFunction is
# not compatible with .grad()"; here it works and agrees with plain PyTorch.
inputs = torch.randn(4, 16, 8, 8, requires_grad=True)
wrapped_grad, = torch.autograd.grad(wrapped(inputs * 1).sum(), inputs)
plain_grad, = torch.autograd.grad(coupling(inputs * 1).sum(), inputs)
print("part 4: torch.autograd.grad through the wrapper matches plain PyTorch: max difference {:.1e}"
      .format((wrapped_grad - plain_grad).abs().max().item()))
assert torch.allclose(wrapped_grad, plain_grad, atol=1e-5)
# [grad]


# [eval]
# Part 5: in eval() or under torch.no_grad() nothing is freed (MemCNN frees the input there too,
# and no backward ever rebuilds it), so inference code may reuse its inputs.
wrapped.eval()
x = torch.randn(4, 16, 8, 8)
wrapped(x)
with torch.no_grad():
    wrapped.train()(x)
assert not memcnn.is_freed(x) and x.storage().size() > 0
print("part 5: in eval() and under torch.no_grad() the input stays usable")
# [eval]

print("migration checks passed")
