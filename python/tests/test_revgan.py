"""memcnn.RevGANGenerator, ConvGANGenerator, ConvGANPair and PatchGAN: the C++ reversible GANs
(memcnn::models, revgan.h) as torch.nn.Modules owning their parameters."""

import copy
import io

import pytest
import torch

import memcnn
from memcnn.models import revgan


def small(dims, **overrides):
    options = dict(dims=dims, channels_a=2, channels_b=3, ngf=8 if dims == 2 else 4, depth=3)
    options.update(overrides)
    return options


def shape(dims, channels, size):
    return (2, channels) + (size,) * dims


def size_for(dims):
    return 16 if dims == 2 else 8


def perturb(module, scale=0.05):
    """Moves every parameter off its initial value (the 3-D blocks start as the identity)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def gradients(generator, x, weights, inverse):
    generator.zero_grad()
    x = x.clone().requires_grad_(True)
    y = generator.inverse(x) if inverse else generator(x)
    (y * weights).sum().backward()
    # One direction reaches one encoder and one decoder: the other domain's have no gradient.
    return {name: p.grad.clone() for name, p in generator.named_parameters() if p.grad is not None}, x.grad.clone()


def worst_relative_error(a, b):
    largest = max(g.abs().max().item() for g in b.values())
    worst = 0.0
    for name, g in b.items():
        scale = max(g.abs().max().item(), 1e-6 * largest)
        worst = max(worst, (a[name] - g).abs().max().item() / scale)
    return worst


def test_reachable_from_import_memcnn_with_cpp_parameter_names():
    assert memcnn.RevGANGenerator is revgan.RevGANGenerator and memcnn.PatchGAN is revgan.PatchGAN
    assert memcnn.ConvGANGenerator is revgan.ConvGANGenerator and memcnn.ConvGANPair is revgan.ConvGANPair
    generator = memcnn.RevGANGenerator(**small(3))
    names = [name for name, _ in generator.named_parameters()]
    for part in ('encoder_a.', 'encoder_b.', 'core.blocks.', 'decoder_a.', 'decoder_b.'):
        assert any(name.startswith(part) for name in names), part
    assert all(isinstance(p, torch.nn.Parameter) for p in generator.parameters())
    pair = memcnn.ConvGANPair(**small(3))
    pair_names = [name for name, _ in pair.named_parameters()]
    assert any(n.startswith('generator_ab.') for n in pair_names)
    assert any(n.startswith('generator_ba.') for n in pair_names)
    # One generator for both directions against two: fewer parameters, though each half-width
    # coupling branch is a quarter of a full-width residual branch.
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(generator) < count(pair)
    assert count(pair) == count(memcnn.ConvGANGenerator(dims=3, in_channels=2, out_channels=3, ngf=4, depth=3)) + \
        count(memcnn.ConvGANGenerator(dims=3, in_channels=3, out_channels=2, ngf=4, depth=3))


def test_defaults_follow_the_authors():
    two, three = memcnn.RevGANGenerator(dims=2), memcnn.RevGANGenerator(dims=3, channels_a=1, channels_b=1)
    assert 'ngf=64' in repr(two) and 'depth=9' in repr(two) and "padding='reflect'" in repr(two)
    assert 'ngf=32' in repr(three) and 'depth=8' in repr(three) and "block='pre_norm_zero_init'" in repr(three)
    assert memcnn.PatchGAN(dims=2).receptive_field == 70
    assert memcnn.PatchGAN(dims=3, in_channels=2).receptive_field == 34


@pytest.mark.parametrize('dims', [2, 3])
def test_shapes_both_directions_and_discriminators(dims):
    size = size_for(dims)
    generator = memcnn.RevGANGenerator(**small(dims))
    a = torch.randn(shape(dims, 2, size))
    b = generator(a)
    assert b.shape == shape(dims, 3, size) and b.abs().max().item() <= 1.0
    assert generator.inverse(b).shape == a.shape
    assert torch.equal(generator.a_to_b(a), b)
    pair = memcnn.ConvGANPair(**small(dims))
    assert pair(a).shape == b.shape and pair.b_to_a(b).shape == a.shape
    assert memcnn.ConvGANGenerator(dims=dims, in_channels=2, out_channels=3, ngf=4, depth=2)(a).shape == b.shape
    padded = memcnn.RevGANGenerator(**small(dims, pad_to_stride=True))
    odd = torch.randn(shape(dims, 2, size - 1))
    assert padded(odd).shape == shape(dims, 3, size - 1)
    discriminator = memcnn.PatchGAN(dims=dims, in_channels=5, ndf=4, layers=2)
    logits = discriminator(torch.cat([a, b], 1).repeat((1, 1) + (2,) * dims))
    assert logits.shape[:2] == (2, 1) and logits.dim() == dims + 2


@pytest.mark.parametrize('dims', [2, 3])
def test_core_inverse_of_forward_gives_the_input_back_and_saving_frees_its_input(dims):
    generator = memcnn.RevGANGenerator(**small(dims, depth=4)).double()
    perturb(generator)
    channels = 4 * 8 if dims == 2 else 2 * 4
    x = torch.randn(shape(dims, channels, 4), dtype=torch.float64)
    with torch.no_grad():
        y = generator.core_forward(x)
        assert (y - x).abs().max().item() > 0.1 * x.abs().max().item()
        assert (generator.core_inverse(y) - x).abs().max().item() < 1e-10 * x.abs().max().item()
        assert (generator.core_forward(generator.core_inverse(x)) - x).abs().max().item() < 1e-10 * x.abs().max().item()
    leaf = x.clone().requires_grad_(True)
    h = leaf * 1.0
    y = generator.core_forward(h)
    assert memcnn.is_freed(h), "the core's input is rebuilt in backward, not kept"
    y.sum().backward()
    assert leaf.grad is not None and all(p.grad is not None for n, p in generator.named_parameters()
                                         if n.startswith('core.'))


@pytest.mark.parametrize('dims', [2, 3])
@pytest.mark.parametrize('inverse', [False, True])
def test_float64_gradients_with_memory_saving_equal_those_without(dims, inverse):
    torch.manual_seed(dims)
    saving = memcnn.RevGANGenerator(**small(dims)).double()
    perturb(saving)
    plain = memcnn.RevGANGenerator(**small(dims, memory_saving=False)).double()
    plain.load_state_dict(saving.state_dict())
    assert saving.memory_saving and not plain.memory_saving
    size = size_for(dims)
    x = torch.randn(shape(dims, 3 if inverse else 2, size), dtype=torch.float64)
    weights = torch.rand(shape(dims, 2 if inverse else 3, size), dtype=torch.float64)
    saving_grads, saving_x = gradients(saving, x, weights, inverse)
    plain_grads, plain_x = gradients(plain, x, weights, inverse)
    assert saving_grads.keys() == plain_grads.keys()
    assert any(n.startswith('encoder_b.' if inverse else 'encoder_a.') for n in plain_grads)
    # Every core parameter is reached: the gradients are not trivially equal.
    assert all(g.abs().max().item() > 0 for n, g in plain_grads.items() if n.startswith('core.'))
    assert worst_relative_error(saving_grads, plain_grads) < 1e-10
    assert (saving_x - plain_x).abs().max().item() <= 1e-10 * plain_x.abs().max().item()
    # The switch on one module gives the same as a second module built without saving.
    saving.set_memory_saving(False)
    switched_grads, _ = gradients(saving, x, weights, inverse)
    assert worst_relative_error(switched_grads, plain_grads) == 0


def test_a_paired_training_step_with_both_optimizers_reduces_the_losses():
    torch.manual_seed(0)
    generator = memcnn.RevGANGenerator(**small(2))
    discriminator = memcnn.PatchGAN(dims=2, in_channels=5, ndf=8, layers=1)
    g_optimizer = torch.optim.Adam(generator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    d_optimizer = torch.optim.Adam(discriminator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    a = torch.randn(4, 2, 16, 16)
    b = torch.tanh(torch.randn(4, 3, 16, 16))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    l1_losses, d_losses = [], []
    for _ in range(15):
        d_optimizer.zero_grad()
        with torch.no_grad():
            fake = generator(a)
        real_logits = discriminator(torch.cat([a, b], 1))
        fake_logits = discriminator(torch.cat([a, fake], 1))
        d_loss = 0.5 * (bce(real_logits, torch.ones_like(real_logits))
                        + bce(fake_logits, torch.zeros_like(fake_logits)))
        d_loss.backward()
        d_optimizer.step()
        g_optimizer.zero_grad()
        fake_b, fake_a = generator(a), generator.inverse(b)
        logits = discriminator(torch.cat([a, fake_b], 1))
        l1 = torch.nn.functional.l1_loss(fake_b, b) + torch.nn.functional.l1_loss(fake_a, a.tanh())
        (bce(logits, torch.ones_like(logits)) + 100 * l1).backward()
        g_optimizer.step()
        l1_losses.append(l1.item())
        d_losses.append(d_loss.item())
    assert l1_losses[-1] < 0.8 * l1_losses[0], l1_losses
    assert min(d_losses[1:]) < d_losses[0], d_losses
    assert all(p.grad is not None for p in discriminator.parameters())


def test_copies_state_dict_and_dtype_act_on_what_the_network_computes_with():
    torch.manual_seed(0)
    generator = memcnn.RevGANGenerator(**small(3))
    perturb(generator)
    generator.set_memory_saving(False)
    b = torch.randn(shape(3, 3, 8))
    with torch.no_grad():
        expected = generator.inverse(b)
        other = memcnn.RevGANGenerator(**small(3))
        assert not torch.allclose(other.inverse(b), expected)
        other.load_state_dict(generator.state_dict())
        assert torch.equal(other.inverse(b), expected)
        copied = copy.deepcopy(generator)
        assert not copied.memory_saving and torch.equal(copied.inverse(b), expected)
        buffer = io.BytesIO()
        torch.save(generator, buffer)
        buffer.seek(0)
        assert torch.equal(torch.load(buffer).inverse(b), expected)
        assert torch.allclose(generator.double().inverse(b.double()), expected.double(), atol=1e-5)


def test_three_dimensional_activation_memory_is_flat_in_depth_with_saving_and_grows_without():
    def peak(depth, saving):
        torch.manual_seed(0)
        generator = memcnn.RevGANGenerator(dims=3, channels_a=1, channels_b=1, ngf=8, depth=depth,
                                           memory_saving=saving)
        x = torch.randn(1, 1, 16, 16, 16)
        generator(x).abs().mean().backward()
        for p in generator.parameters():
            if p.grad is not None:  # A to B leaves B's encoder and A's decoder out
                p.grad.zero_()
        with memcnn.MemoryProbe() as probe:
            generator(x).abs().mean().backward()
        return probe.peak_above_start()

    shallow, deep = peak(2, True), peak(8, True)
    assert deep <= 1.1 * shallow, (shallow, deep)
    assert peak(8, False) > 1.5 * peak(2, False)


@pytest.mark.parametrize('dims', [2, 3])
def test_add_input_starts_as_the_identity_in_both_directions(dims):
    generator = memcnn.RevGANGenerator(**small(dims, channels_b=2, add_input=True))
    pair = memcnn.ConvGANPair(**small(dims, channels_b=2, add_input=True))
    assert 'add_input=True' in repr(generator)
    x = torch.randn(shape(dims, 2, size_for(dims)))
    with torch.no_grad():
        for y in (generator(x), generator.inverse(x), pair(x), pair.b_to_a(x)):
            assert torch.equal(y, x)
        perturb(generator)
        assert not torch.equal(generator(x), x)
    with pytest.raises(ValueError, match='add_input'):
        memcnn.RevGANGenerator(**small(dims, add_input=True))


def test_bad_input_says_what_to_change():
    generator = memcnn.RevGANGenerator(**small(2))
    with pytest.raises(ValueError, match='set channels_a'):
        generator(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match='set channels_b'):
        generator.inverse(torch.randn(1, 2, 16, 16))
    with pytest.raises(ValueError, match='multiple of 4.*pad_to_stride'):
        generator(torch.randn(1, 2, 18, 18))
    with pytest.raises(ValueError, match='spatial dimensions'):
        generator(torch.randn(1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match="the core's channels"):
        generator.core_forward(torch.randn(1, 5, 4, 4))
    with pytest.raises(TypeError, match='RevGANGenerator.forward'):
        generator([1, 2])
    with pytest.raises(ValueError, match='dims must be 2'):
        memcnn.RevGANGenerator(dims=4)
    with pytest.raises(ValueError, match='stem_kernel must be odd'):
        memcnn.RevGANGenerator(dims=2, stem_kernel=4)
    with pytest.raises(ValueError, match="block must be 'post_norm'"):
        memcnn.RevGANGenerator(dims=2, block='pre')
    with pytest.raises(ValueError, match="padding must be"):
        memcnn.ConvGANPair(dims=3, padding='circular')
    with pytest.raises(ValueError, match='in_channels'):
        memcnn.PatchGAN(dims=2, in_channels=5)(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match='too small'):
        memcnn.PatchGAN(dims=2, in_channels=3)(torch.randn(1, 3, 16, 16))
    with pytest.raises(ValueError, match='layers'):
        memcnn.PatchGAN(dims=3, layers=0)
