"""memcnn.ViT and memcnn.RevViT: the C++ transformers as torch.nn.Modules owning their parameters."""

import copy
import io

import pytest
import torch

import memcnn
from memcnn.models import vit


def small(**overrides):
    options = dict(num_classes=5, in_channels=3, image_size=8, patch_size=2, dim=16, depth=3, heads=2, mlp_dim=32)
    options.update(overrides)
    return options


def gradients(model, seed, dtype=torch.float64):
    model = model.to(dtype)
    torch.manual_seed(seed)
    x = torch.randn(4, 3, 8, 8, dtype=dtype, requires_grad=True)
    labels = torch.randint(5, (4,))
    torch.nn.functional.cross_entropy(model(x), labels).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters()}, x.grad.clone()


def test_reachable_from_import_memcnn_with_cpp_parameter_names():
    assert memcnn.ViT is vit.ViT and memcnn.RevViT is vit.RevViT
    model = memcnn.RevViT(**small())
    names = [name for name, _ in model.named_parameters()]
    assert 'embedding.position_embedding' in names
    assert 'blocks.0.fn.F.qkv.weight' in names and 'blocks.2.fn.G.fc2.bias' in names
    assert all(isinstance(p, torch.nn.Parameter) for p in model.parameters())
    assert set(vit.names()) == {'vit_tiny', 'revvit_tiny', 'vit_small', 'revvit_small'}
    tiny = vit.create('revvit_tiny', num_classes=10, in_channels=1, image_size=28)
    assert isinstance(tiny, memcnn.RevViT)
    tiny.eval()
    with torch.no_grad():
        assert tiny(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize('single_node', [False, True])
def test_revvit_float64_gradients_equal_plain_with_dropout_and_stochastic_depth(single_node):
    options = small(dropout=0.1, attention_dropout=0.1, drop_path=0.3, single_node=single_node)
    torch.manual_seed(0)
    saving = memcnn.RevViT(**options)
    plain = memcnn.RevViT(memory_saving=False, **options)
    plain.load_state_dict(saving.state_dict())
    saving_grads, saving_x = gradients(saving, 3)
    plain_grads, plain_x = gradients(plain, 3)
    for name, g in plain_grads.items():
        scale = max(g.abs().max().item(), 1e-12)
        assert (saving_grads[name] - g).abs().max().item() / scale < 1e-10, name
    assert torch.allclose(saving_x, plain_x, rtol=1e-10, atol=1e-14)


def test_exact_revvit_float32_gradients_bitwise_equal():
    options = small(dropout=0.1, drop_path=0.2, exact=True)
    torch.manual_seed(0)
    saving = memcnn.RevViT(**options)
    plain = memcnn.RevViT(memory_saving=False, **options)
    plain.load_state_dict(saving.state_dict())
    saving_grads, saving_x = gradients(saving, 4, torch.float32)
    plain_grads, plain_x = gradients(plain, 4, torch.float32)
    for name, g in plain_grads.items():
        assert torch.equal(saving_grads[name], g), name
    assert torch.equal(saving_x, plain_x)


def test_optimizer_state_dict_and_copies_act_on_what_the_model_computes_with():
    torch.manual_seed(0)
    model = memcnn.ViT(**small(pooling='mean'))
    x = torch.randn(4, 3, 8, 8)
    labels = torch.randint(5, (4,))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]
    model.eval()
    with torch.no_grad():
        expected = model(x)
        other = memcnn.ViT(**small(pooling='mean')).eval()
        assert not torch.allclose(other(x), expected)
        other.load_state_dict(model.state_dict())
        assert torch.equal(other(x), expected)
        assert torch.equal(copy.deepcopy(model)(x), expected)
        buffer = io.BytesIO()
        torch.save(model, buffer)
        buffer.seek(0)
        assert torch.equal(torch.load(buffer)(x), expected)
        assert torch.allclose(model.double()(x.double()), expected.double(), atol=1e-5)


def test_revvit_activation_memory_flat_in_depth():
    def peak(depth):
        torch.manual_seed(0)
        model = memcnn.RevViT(**small(image_size=16, dim=32, mlp_dim=128, depth=depth))
        x = torch.randn(8, 3, 16, 16)
        model(x).pow(2).mean().backward()
        for p in model.parameters():
            p.grad.zero_()
        with memcnn.MemoryProbe() as probe:
            model(x).pow(2).mean().backward()
        return probe.peak_above_start()

    shallow, deep = peak(2), peak(8)
    assert deep <= 1.1 * shallow, (shallow, deep)


def test_bad_options_raise_value_errors():
    with pytest.raises(ValueError, match='multiple of heads'):
        memcnn.ViT(**small(dim=15))
    with pytest.raises(ValueError, match='pooling'):
        memcnn.ViT(**small(pooling='max'))
    with pytest.raises(ValueError, match='preserve_rng_state|probability'):
        memcnn.RevViT(**small(dropout=2.0))
