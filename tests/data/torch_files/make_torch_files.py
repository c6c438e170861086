#!/usr/bin/python3
"""Writes the torch.save files that tests/test_state_dict.cpp reads (run with Debian's python3 and
its python3-torch 1.13, from this folder: `/usr/bin/python3 make_torch_files.py`).

Every tensor's values follow a formula the C++ test recomputes (see value()), so the files need no
second copy of their contents.

- state_dict_torch113.pt: torch.save(module.state_dict()) of a small module (convolution,
  BatchNorm with its int64 num_batches_tracked, linear layer, and buffers of other types: float64,
  float16, bfloat16, bool, int32, a transposed view sharing its storage with another buffer, a
  0-dim tensor and an empty one), PyTorch 1.13's zip format with the OrderedDict's _metadata.
- state_dict_torch2x_layout.pt: the same state dict in the layout PyTorch 2.x's torch.save
  writes (records data.pkl, .format_version, .storage_alignment, byteorder, data/N aligned to 64
  bytes, version "3", .data/serialization_id), assembled here with Python's zipfile from the pickle
  PyTorch 1.13 writes: PyTorch 2.x's pickle of a state dict uses the same protocol 2 and the same
  calls (collections.OrderedDict, torch._utils._rebuild_tensor_v2, persistent ids ('storage',
  torch.FloatStorage, key, location, numel)). No PyTorch 2.x runs on these machines; the layout
  follows torch/serialization.py and caffe2/serialize/inline_container.cc of PyTorch 2.x.
- optimizer_sgd_torch113.pt: torch.save(optimizer.state_dict()) of SGD with momentum after one
  step over two parameters (dicts with int keys, lists, floats, bools, None).
- plain_data_torch113.pt: a dict of tuples, lists, big and negative integers, floats, strings and
  one tensor referenced twice (read back as one tensor).
- legacy_torch113.pt: the state dict in PyTorch's legacy format (_use_new_zipfile_serialization=False).
- model_torch113.pt: a pickled nn.Module (torch.save(model)), which only Python can rebuild.
- torchscript_torch113.pt: torch.jit.save of a scripted module.
"""

import collections
import io
import os
import pickle
import zipfile

import torch


def value(shape, dtype, seed):
    """The tensor the C++ test expects: (i * 7 + seed) % 23 - 11 over the flat index i, then /4."""
    n = 1
    for s in shape:
        n *= s
    flat = (torch.arange(n, dtype=torch.float64) * 7 + seed) % 23 - 11
    if dtype.is_floating_point:
        flat = flat / 4
    if dtype == torch.bool:
        return (flat > 0).reshape(shape)
    return flat.to(dtype).reshape(shape)


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 3, 3)
        self.bn = torch.nn.BatchNorm2d(3)
        self.fc = torch.nn.Linear(4, 2)
        self.register_buffer("float64", value((2, 3), torch.float64, 5))
        self.register_buffer("float16", value((5,), torch.float16, 6))
        self.register_buffer("bf16", value((5,), torch.bfloat16, 7))
        self.register_buffer("flags", value((4,), torch.bool, 8))
        self.register_buffer("ints", value((3,), torch.int32, 9))
        self.register_buffer("square", value((3, 4), torch.float32, 10))
        self.register_buffer("square_t", self.square.t())
        self.register_buffer("scalar", value((), torch.float32, 11))
        self.register_buffer("empty", torch.zeros(0, 3))
        with torch.no_grad():
            for i, (name, p) in enumerate(self.named_parameters()):
                p.copy_(value(tuple(p.shape), p.dtype, i))
            self.bn.running_mean.copy_(value((3,), torch.float32, 20))
            self.bn.running_var.copy_(value((3,), torch.float32, 21).abs() + 1)
            self.bn.num_batches_tracked.fill_(12345678901)


def write_2x_layout(state_dict, path):
    """torch.save's zip layout as PyTorch 2.x writes it, around the pickle PyTorch writes."""
    storages = collections.OrderedDict()

    def persistent_id(obj):
        if isinstance(obj, torch.storage.TypedStorage):
            key = storages.setdefault(obj.data_ptr(), (str(len(storages)), obj))[0]
            return ("storage", getattr(torch, obj.pickle_storage_type()), key, "cpu", obj.size())
        return None

    data = io.BytesIO()
    pickler = pickle.Pickler(data, protocol=2)
    pickler.persistent_id = persistent_id
    pickler.dump(state_dict)
    folder = os.path.splitext(os.path.basename(path))[0]
    records = [("data.pkl", data.getvalue()), (".format_version", b"1"), (".storage_alignment", b"64"),
               ("byteorder", b"little")]
    for key, storage in storages.values():
        records.append(("data/" + key, bytes(storage.cpu().untyped())))
    records += [("version", b"3\n"), (".data/serialization_id", b"0123456789012345678901234567890123456789")]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, payload in records:
            info = zipfile.ZipInfo(folder + "/" + name, date_time=(1980, 1, 1, 0, 0, 0))
            # 2.x pads the local header's extra field so that every record's data starts at a multiple of 64.
            offset = archive.fp.tell() + 30 + len(info.filename)
            padding = (-(offset + 4)) % 64
            info.extra = b"FB" + padding.to_bytes(2, "little") + b"Z" * padding
            archive.writestr(info, payload)


def main():
    torch.manual_seed(0)
    model = Small()
    state = model.state_dict()
    torch.save(state, "state_dict_torch113.pt")
    write_2x_layout(state, "state_dict_torch2x_layout.pt")
    torch.save(state, "legacy_torch113.pt", _use_new_zipfile_serialization=False)

    a = torch.nn.Parameter(value((2, 2), torch.float32, 1))
    b = torch.nn.Parameter(value((3,), torch.float32, 2))
    optimizer = torch.optim.SGD([a, b], lr=0.1, momentum=0.9, weight_decay=2e-4)
    (a.sum() * 2 + (b * b).sum()).backward()
    optimizer.step()
    torch.save(optimizer.state_dict(), "optimizer_sgd_torch113.pt")

    shared = value((2,), torch.int64, 3)
    torch.save({"tuple": (1, 2.5, "x", None, True), "list": [shared, shared], "big": 2 ** 40, "negative": -3,
                "huge": -2 ** 62, "float": -0.125, "nested": {"deeper": [1, [2, (3,)]]}, 7: "int key"},
               "plain_data_torch113.pt")

    torch.save(torch.nn.Linear(2, 2), "model_torch113.pt")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), "torchscript_torch113.pt")


if __name__ == "__main__":
    main()
