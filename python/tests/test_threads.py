"""The GIL in the callbacks: Python's autograd engine runs backward without the GIL, on its own
threads for several concurrent callers; F and G are Python code. Several Python threads train
wrapped couplings at once (one with a Python autograd.Function inside F, whose backward needs the
GIL inside the engine too); all must finish, with gradients equal to a single-threaded run."""

import copy
import threading

import torch
import torch.nn as nn

import memcnn
from helpers import ConvBnRelu


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x * x

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


class WithPythonFunction(nn.Module):
    def __init__(self):
        super().__init__()
        self.inner = ConvBnRelu(2)  # no dropout: threads share the global generator

    def forward(self, x):
        return Square.apply(self.inner(x)) * 0.1


def build():
    torch.manual_seed(11)
    return nn.Sequential(*[memcnn.InvertibleModuleWrapper(
        memcnn.AdditiveCoupling(WithPythonFunction(), ConvBnRelu(2)), preserve_rng_state=True,
        fused_backward=bool(i % 2)) for i in range(3)]).double()


def step(model, x, use_grad):
    torch.manual_seed(5)
    y = model(x.clone().requires_grad_() * 1.0)
    loss = y.pow(2).sum()
    params = list(model.parameters())
    if use_grad:
        return torch.autograd.grad(loss, params)
    loss.backward()
    return [p.grad for p in params]


def test_many_threads_no_deadlock_same_gradients():
    template = build()
    x = torch.rand(3, 4, 6, 6, dtype=torch.float64)
    expected = step(copy.deepcopy(template), x, use_grad=False)
    results, errors = {}, []

    def worker(i):
        try:
            model = copy.deepcopy(template)
            for _ in range(3):
                for p in model.parameters():
                    p.grad = None
                results[i] = step(model, x, use_grad=bool(i % 2))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "deadlock: threads still running after 120 s"
    assert not errors, errors
    assert len(results) == 6
    for grads in results.values():
        for g, e in zip(grads, expected):
            assert torch.allclose(g, e, rtol=1e-10, atol=1e-12)


def test_backward_from_a_thread_while_main_thread_holds_the_gil():
    model = build()
    x = torch.rand(2, 4, 5, 5, dtype=torch.float64)
    y = model(x.clone().requires_grad_() * 1.0).sum()
    done = threading.Event()

    def worker():
        y.backward()
        done.set()

    t = threading.Thread(target=worker, daemon=True)
    t.start()
    spin = 0
    while not done.is_set() and spin < 5_000_000:  # busy Python work on this thread, holding the GIL
        spin += 1
    t.join(timeout=120)
    assert done.is_set()
    assert all(p.grad is not None for p in model.parameters())
