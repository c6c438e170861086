"""The memory planner (memcnn/memory_plan.h) for Python models: under a budget of activation memory,
choose for every memory-saving block whether it keeps its activations, recomputes them from its
kept input, or rebuilds its input by the inverse, at the least step time.

The blocks are the model's memcnn.InvertibleModuleWrapper modules and the wrappers inside networks
built in C++ (memcnn.RevViT, the RevGAN networks). Bytes are the allocator's (on CPU: memcnn's
counting allocator, switched on when memcnn is imported), budgets and figures in MiB (2^20 bytes).
Plans are saved in the JSON format of memcnn-train's memory_plan.json, so either side reads the
other's.

Example::

    def step():
        optimizer.zero_grad()
        loss_fn(model(x), y).backward()
        optimizer.step()

    plan = memcnn.plan_memory(model, step, budget_mib=200)
    print(plan)
"""

import json
import os
import tempfile

import torch

from memcnn import _C
from memcnn.models.revop import InvertibleModuleWrapper
from memcnn.models._cpp_network import CppNetwork

__all__ = ['plannable_blocks', 'profile_memory', 'plan_memory', 'plan_for_profile', 'minimum_budget_mib',
           'apply_memory_plan', 'save_memory_plan', 'load_memory_plan', 'MemoryPlan', 'MemoryProfile']

MemoryPlan = _C.MemoryPlan
MemoryProfile = _C.MemoryProfile

_MIB = float(1 << 20)
_FORMAT = "memcnn-memory-plan"


def _wrapper_setter(wrapper):
    def set_choice(choice):
        wrapper.disable = choice == "keep"
        wrapper.keep_input = choice == "recompute"
    return set_choice


def plannable_blocks(model):
    """The memory-saving blocks of `model`, named as in ``model.named_modules()``.

    Args:
        model (torch.nn.Module): holds memcnn.InvertibleModuleWrapper modules, or networks built in
            C++ (memcnn.RevViT, memcnn.RevGANGenerator, ...), or both.

    Returns:
        list of memcnn._C.PlannableBlock.
    """
    blocks = []
    for name, module in model.named_modules():
        if isinstance(module, InvertibleModuleWrapper):
            blocks.append(_C.PlannableBlock(module, name, "InvertibleModuleWrapper", [True, True, True],
                                            _wrapper_setter(module)))
        elif isinstance(module, CppNetwork):
            for block in module.plannable_blocks():
                block.name = name + "." + block.name if name else block.name
                blocks.append(block)
    return blocks


def _device_of(model, device):
    if device is not None:
        return str(torch.device(device))
    for p in model.parameters():
        return str(p.device)
    return "cpu"


def _blocks_to_plan(model):
    if not model.training:
        raise ValueError("memory plan: the model is in evaluation mode, where no block saves memory; call "
                         "model.train() first")
    blocks = plannable_blocks(model)
    if not blocks:
        raise ValueError("memory plan: the model has no memory-saving block (memcnn.InvertibleModuleWrapper, or a "
                         "memcnn network built in C++ such as RevViT); there is nothing to plan")
    return blocks


def _budget_bytes(budget_mib):
    if isinstance(budget_mib, bool) or not isinstance(budget_mib, (int, float)) or not budget_mib > 0:
        raise ValueError("memory plan: budget_mib must be a positive number of MiB (2^20 bytes), got {!r}"
                         .format(budget_mib))
    return int(budget_mib * _MIB)


def profile_memory(model, step, steps=3, device=None):
    """Runs `step` 1 + `steps` times under each of keep, recompute and rebuild set on every block and
    returns what it measured (memcnn::profile_memory). The step's parameter updates happen.

    Args:
        model (torch.nn.Module): in training mode, with at least one memory-saving block.
        step (callable): one training step (forward, backward, optimizer step), no arguments.
        steps (int): timed steps per setting (the fastest counts).
        device: the device whose allocator is read; the model's first parameter's by default.

    Returns:
        MemoryProfile
    """
    return _C.profile_memory(_blocks_to_plan(model), step, _device_of(model, device), int(steps))


def minimum_budget_mib(profile):
    """The least budget a plan for `profile` accepts (every block at its most saving choice), in MiB."""
    return _C.minimum_budget_bytes(profile) / _MIB


def plan_for_profile(profile, budget_mib):
    """The plan of least predicted step time whose predicted peak is within `budget_mib` (MiB).

    Raises:
        ValueError: the budget is below the all-saving minimum (the message states it).
    """
    return _C.plan_memory(profile, _budget_bytes(budget_mib))


def plan_memory(model, step, budget_mib, steps=3, retries=3, device=None):
    """Profiles, plans, applies and measures a memory plan for `model` (memcnn::fit_memory_plan):
    the blocks' options are set so that one training step's activation peak stays within
    `budget_mib` at the least predicted time. Where the measured peak exceeds the budget, plans
    again for a budget lowered by the excess (at most `retries` times).

    Args:
        model (torch.nn.Module): in training mode, with at least one memory-saving block.
        step (callable): one training step, no arguments; it runs several times (updates happen).
        budget_mib (float): activation memory for the step, in MiB (2^20 bytes).
        steps (int): timed profile steps per uniform setting.
        retries (int): plans again at most this many times while the measured peak exceeds the budget.
        device: the device whose allocator is read; the model's first parameter's by default.

    Returns:
        MemoryPlan: applied, with its predicted and measured peak (bytes) and step time (seconds).

    Raises:
        ValueError: the budget is below the all-saving minimum (the message states it), the model is
            in evaluation mode or has no block.
    """
    plan, _ = _C.fit_memory_plan(_blocks_to_plan(model), step, _budget_bytes(budget_mib),
                                 _device_of(model, device), int(steps), int(retries))
    return plan


def apply_memory_plan(model, plan):
    """Sets each block of `model` named in `plan` to its choice.

    Raises:
        ValueError: a name is not a block of the model, or the block does not offer the choice.
    """
    _C.apply_memory_plan(plannable_blocks(model), plan)


def save_memory_plan(plan, path):
    """Writes `plan` as JSON to `path` (memcnn-train's memory_plan.json format), atomically."""
    data = {
        "format": _FORMAT, "version": 1,
        "budget_bytes": plan.budget_bytes, "predicted_peak_bytes": plan.predicted_peak_bytes,
        "predicted_seconds": plan.predicted_seconds, "measured_peak_bytes": plan.measured_peak_bytes,
        "measured_seconds": plan.measured_seconds,
        "blocks": [{"name": n, "choice": c} for n, c in zip(plan.block_names, plan.choices)],
    }
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".memory_plan.")
    try:
        with os.fdopen(handle, "w") as f:
            json.dump(data, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def load_memory_plan(path):
    """Reads a plan written by save_memory_plan or memcnn-train.

    Raises:
        ValueError: the file is not a memcnn memory plan, or a field is missing or wrong (named).
    """
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as e:
        raise ValueError("load_memory_plan: {} is not JSON: {}".format(path, e))
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        raise ValueError("load_memory_plan: {} is not a memcnn memory plan (no \"format\": \"{}\")".format(path, _FORMAT))
    if data.get("version") != 1:
        raise ValueError("load_memory_plan: {} is version {!r} of the format; this memcnn reads version 1"
                         .format(path, data.get("version")))
    plan = MemoryPlan()
    try:
        plan.budget_bytes = int(data["budget_bytes"])
        plan.predicted_peak_bytes = int(data["predicted_peak_bytes"])
        plan.predicted_seconds = float(data["predicted_seconds"])
        plan.measured_peak_bytes = int(data.get("measured_peak_bytes", -1))
        plan.measured_seconds = float(data.get("measured_seconds", -1))
        plan.block_names = [str(b["name"]) for b in data["blocks"]]
        plan.choices = [str(b["choice"]) for b in data["blocks"]]
    except (KeyError, TypeError) as e:
        raise ValueError("load_memory_plan: {} lacks or has a wrong field: {}".format(path, e))
    return plan
