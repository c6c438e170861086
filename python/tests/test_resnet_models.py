"""memcnn.models.resnet: MemCNN's ResNet/RevNet classes, their checkpoints' names, the experiments'
six networks against the C++ ones, and the core's fixes holding inside them (BatchNorm statistics
once per step, a stem ReLU's output kept, gradients and torch.autograd.grad equal the plain model's)."""

import copy
import os

import pytest
import torch

import memcnn
from memcnn import _C
from memcnn.experiment.factory import get_attr_from_module, load_experiment_config
from memcnn.models.resnet import (BasicBlock, BasicBlockSub, Bottleneck, BottleneckSub, ResNet, RevBasicBlock,
                                  RevBottleneck, batch_norm, conv3x3)
from helpers import revnet38_state_keys

EXPERIMENTS = os.path.join(os.path.dirname(memcnn.__file__), "config", "experiments.json")


def build(name, num_classes=10, in_channels=3):
    params = dict(load_experiment_config(EXPERIMENTS, [name])["model_params"])
    params["block"] = get_attr_from_module(params["block"])
    return ResNet(num_classes=num_classes, in_channels=in_channels, **params)


def disable_memory_saving(model):
    for m in model.modules():
        if isinstance(m, memcnn.InvertibleModuleWrapper):
            m.disable = True
    return model


@pytest.mark.parametrize("name", ["resnet32", "resnet110", "resnet164", "revnet38", "revnet110", "revnet164"])
def test_experiment_models_have_the_cpp_models_parameter_counts(name):
    model = build(name)
    assert sum(p.numel() for p in model.parameters()) == _C.CppModel(name, True).parameter_count()


def test_checkpoint_names_are_memcnns():
    keys = set(build("revnet38").state_dict())
    for key in revnet38_state_keys():
        assert key in keys
    blocks = build("resnet32").layer2
    assert hasattr(blocks[0], "basicblock_sub") and isinstance(blocks[0].downsample, torch.nn.Sequential)
    assert isinstance(build("resnet164").layer1[0].bottleneck_sub, BottleneckSub)
    rev = build("revnet164").layer1[1]
    assert isinstance(rev.revblock, memcnn.InvertibleModuleWrapper) and isinstance(rev.revblock._fn.Fm, BottleneckSub)


def test_defaults_and_helpers():
    assert conv3x3(4, 8).kernel_size == (3, 3) and conv3x3(4, 8, 2).stride == (2, 2) and conv3x3(4, 8).bias is None
    bn = batch_norm(6)
    assert (bn.momentum, bn.eps) == (0.99, 0.001)
    assert BasicBlock.expansion == RevBasicBlock.expansion == 1 and Bottleneck.expansion == RevBottleneck.expansion == 4
    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=3)
    assert model.channels_per_layer == [64, 64, 128, 256, 512] and model.strides == [2] * 5
    assert model.has_4_layers and model.conv1.kernel_size == (7, 7)
    assert all((m.momentum, m.eps) == (0.99, 0.001) for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    fixed = ResNet(BasicBlock, [1, 1, 1], channels_per_layer=[8, 8, 16, 32], batch_norm_fix=False, implementation=1)
    assert all((m.momentum, m.eps) == (0.1, 1e-5) for m in fixed.modules() if isinstance(m, torch.nn.BatchNorm2d))
    rev = ResNet(RevBasicBlock, [2, 1, 1], channels_per_layer=[8, 8, 16, 32], implementation=1)
    assert rev.layer1[1].revblock.implementation == 1
    assert isinstance(BasicBlockSub(4, 4, noactivation=True).conv1, torch.nn.Conv2d)
    assert not hasattr(BasicBlockSub(4, 4, noactivation=True), "bn1")


def test_wrong_stage_lists_are_clear_errors():
    with pytest.raises(ValueError, match="channels_per_layer"):
        ResNet(BasicBlock, [1, 1, 1], channels_per_layer=[8, 8, 16])
    with pytest.raises(ValueError, match="3 or 4 stages"):
        ResNet(BasicBlock, [1, 1], channels_per_layer=[8, 8, 16])


def test_grey_images_with_in_channels():
    model = build("revnet38", in_channels=1)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def small_revnet(dtype=torch.float64):
    torch.manual_seed(3)
    model = ResNet(RevBasicBlock, [2, 2, 2], num_classes=5, channels_per_layer=[8, 8, 16, 32], strides=[1, 1, 2, 2],
                   init_kernel_size=3, batch_norm_fix=False).to(dtype)
    return model


def test_revnet_step_equals_the_plain_model():
    """Gradients with memory saving equal the same network's without it (float64); the first block's
    input, the stem ReLU's saved output, is kept (MemCNN frees it: its issue #70); BatchNorm running
    statistics end as after one plain forward (MemCNN updates them three times)."""
    saving = small_revnet()
    plain = disable_memory_saving(copy.deepcopy(saving))
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    target = torch.randint(0, 5, (4,))
    for model in (saving, plain):
        torch.nn.functional.cross_entropy(model(x), target).backward()
    for (name, a), b in zip(saving.named_parameters(), plain.parameters()):
        assert torch.allclose(a.grad, b.grad, rtol=1e-9, atol=1e-12), name
    for (name, a), b in zip(saving.named_buffers(), plain.buffers()):
        assert torch.equal(a, b), name


def test_autograd_grad_through_a_revnet():
    saving = small_revnet()
    plain = disable_memory_saving(copy.deepcopy(saving))
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64, requires_grad=True)
    grads = [torch.autograd.grad(model(x).square().sum(), [x] + list(model.parameters())) for model in (saving, plain)]
    for a, b in zip(*grads):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-12)


def test_memory_saving_in_a_revnet():
    """The wrapped blocks free their inputs: a training step's peak is below the plain model's."""
    peaks = []
    for disable in (False, True):
        model = small_revnet(torch.float32)
        if disable:
            disable_memory_saving(model)
        x = torch.randn(16, 3, 32, 32)
        with memcnn.MemoryProbe() as probe:
            model(x).sum().backward()
        peaks.append(probe.peak_above_start())
    assert peaks[0] < 0.9 * peaks[1], peaks
