"""The memory planner from Python (memcnn.plan_memory): planned budgets hold on the allocator's bytes,
gradients under a plan equal the plain model's, a budget below the minimum is refused with the
minimum, plans round-trip through memcnn-train's JSON format, and the wrappers inside networks built
in C++ (RevViT) are planned beside Python ones."""

import json

import pytest
import torch
import torch.nn as nn

import memcnn
from helpers import ConvBnRelu, relative_error


class ChainNet(nn.Module):
    """A stem, a chain of wrapped additive couplings, a pooled linear head."""

    def __init__(self, depth, channels=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1), nn.ReLU())
        self.blocks = nn.ModuleList(
            memcnn.InvertibleModuleWrapper(memcnn.AdditiveCoupling(ConvBnRelu(channels // 2),
                                                                   ConvBnRelu(channels // 2)))
            for _ in range(depth))
        self.head = nn.Linear(channels, 5)

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.head(x.mean((2, 3)))


def make(depth, dtype=torch.float32):
    torch.manual_seed(0)
    net = ChainNet(depth).to(dtype)
    x = torch.randn(4, 3, 8, 8, dtype=dtype)
    y = torch.randint(5, (4,))

    def step():
        for p in net.parameters():
            if p.grad is not None:
                p.grad.zero_()
        nn.functional.cross_entropy(net(x), y).backward()
    return net, step


def gradients(net, step):
    step()
    return [p.grad.clone() for p in net.parameters()]


def gradient_error(a, b):
    """The largest difference relative to the largest gradient: the conv biases before BatchNorm have
    gradients of rounding size (BatchNorm removes their effect), which an error per tensor would blow up."""
    return relative_error(torch.cat([x.flatten() for x in a]), torch.cat([y.flatten() for y in b]))


def test_the_wrappers_are_the_blocks_named_as_in_the_model():
    net, _ = make(3)
    blocks = memcnn.plannable_blocks(net)
    assert [b.name for b in blocks] == ["blocks.0", "blocks.1", "blocks.2"]
    assert all(b.allowed == [True, True, True] for b in blocks)


def test_planned_budgets_hold_and_gradients_equal_the_plain_models():
    net, step = make(6, torch.float64)
    plain = gradients(net, step)  # every wrapper rebuilds by default; its gradients are the reference below
    for block in net.blocks:
        block.disable = True
    assert gradient_error(gradients(net, step), plain) < 1e-10
    for block in net.blocks:
        block.disable = False
    profile = memcnn.profile_memory(net, step, steps=1)
    low = memcnn.minimum_budget_mib(profile)
    high = profile.measured_peak_bytes[0] / 2**20
    assert low < high
    seen = set()
    for k in range(5):
        budget = low + (high - low) * k / 4
        plan = memcnn.plan_for_profile(profile, budget)
        assert plan.predicted_peak_bytes <= budget * 2**20
        memcnn.apply_memory_plan(net, plan)
        # The plan is applied: the wrappers' options say so, the peak holds, gradients are the plain model's.
        for block, choice in zip(net.blocks, plan.choices):
            assert block.disable == (choice == "keep")
            assert block.keep_input == (choice == "recompute")
        with memcnn.MemoryProbe() as probe:
            step()
        assert probe.peak_above_start() <= budget * 2**20, str(plan)
        seen.add(tuple(plan.choices))
        assert gradient_error(gradients(net, step), plain) < 1e-10
    assert len(seen) >= 2  # the budgets led to different plans
    # All in one call (profile, plan, apply, measure), with room for a new profile's own figures.
    budget = low + (high - low) * 0.75
    plan = memcnn.plan_memory(net, step, budget, steps=1)
    assert 0 < plan.measured_peak_bytes <= budget * 2**20, str(plan)
    assert gradient_error(gradients(net, step), plain) < 1e-10


def test_a_budget_below_the_minimum_is_refused_with_the_minimum():
    net, step = make(3)
    profile = memcnn.profile_memory(net, step, steps=1)
    minimum = memcnn.minimum_budget_mib(profile)
    with pytest.raises(ValueError, match="below the all-saving minimum of {:.1f} MiB".format(minimum)):
        memcnn.plan_for_profile(profile, minimum * 0.9)
    with pytest.raises(ValueError, match="budget_mib must be a positive number"):
        memcnn.plan_memory(net, step, -1)
    net.eval()
    with pytest.raises(ValueError, match="evaluation mode"):
        memcnn.plan_memory(net, step, 10)
    with pytest.raises(ValueError, match="no memory-saving block"):
        memcnn.plan_memory(nn.Linear(2, 2), lambda: None, 10)


def test_an_error_in_the_step_reaches_the_caller():
    net, _ = make(2)

    def failing():
        raise KeyError("from the step")
    with pytest.raises(KeyError, match="from the step"):
        memcnn.plan_memory(net, failing, 10)


def test_plans_round_trip_through_the_json_format_of_memcnn_train(tmp_path):
    net, step = make(4)
    profile = memcnn.profile_memory(net, step, steps=1)
    plan = memcnn.plan_for_profile(profile, profile.measured_peak_bytes[0] / 2**20)
    path = str(tmp_path / "memory_plan.json")
    memcnn.save_memory_plan(plan, path)
    with open(path) as f:
        data = json.load(f)
    assert data["format"] == "memcnn-memory-plan" and data["version"] == 1
    assert [b["name"] for b in data["blocks"]] == plan.block_names
    loaded = memcnn.load_memory_plan(path)
    assert loaded.block_names == plan.block_names and loaded.choices == plan.choices
    assert loaded.budget_bytes == plan.budget_bytes
    fresh, _ = make(4)
    memcnn.apply_memory_plan(fresh, loaded)
    assert [b.disable for b in fresh.blocks] == [c == "keep" for c in plan.choices]
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not a memcnn memory plan"):
        memcnn.load_memory_plan(str(tmp_path / "other.json"))
    loaded.block_names = ["head"] + loaded.block_names[1:]
    with pytest.raises(ValueError, match="'head' is not a memory-saving block"):
        memcnn.apply_memory_plan(fresh, loaded)
    with pytest.raises(ValueError, match="unknown block choice"):
        loaded.choices = ["discard"] * len(loaded.choices)


def test_the_wrappers_inside_a_network_built_in_cpp_are_planned():
    torch.manual_seed(0)

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = memcnn.RevViT(image_size=16, patch_size=4, in_channels=3, num_classes=10, dim=64, depth=4,
                                     heads=2, mlp_dim=128)

        def forward(self, x):
            return self.vit(x)

    model = Model()
    x = torch.randn(8, 3, 16, 16)
    y = torch.randint(10, (8,))

    def step():
        model.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()

    names = [b.name for b in memcnn.plannable_blocks(model)]
    assert len(names) >= 4 and all(n.startswith("vit.") for n in names), names
    profile = memcnn.profile_memory(model, step, steps=1)
    assert len(profile.block_names) >= 4
    low, high = memcnn.minimum_budget_mib(profile), profile.measured_peak_bytes[0] / 2**20
    assert low < high
    budget = low + (high - low) * 0.75
    plan = memcnn.plan_memory(model, step, budget, steps=1)
    assert plan.measured_peak_bytes <= budget * 2**20, str(plan)
    assert "vit." in str(plan)
