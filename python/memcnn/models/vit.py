"""Vision transformers from memcnn's C++ models (memcnn::models, vit.h): ViT and RevViT, the
reversible two-stream ViT of Mangalam et al., "Reversible Vision Transformers" (CVPR 2022).

RevViT duplicates the embedded tokens into two streams; each block is an additive coupling with
F = attention(LayerNorm) and G = MLP(LayerNorm) inside memcnn's memory-saving wrapper (fused
backward, random numbers replayed), so its activation memory does not grow with depth and its
gradients equal those of the same computation without memory saving (bit for bit with
exact=True). The models compute in C++; the modules here are ordinary torch.nn.Modules that own
the parameters (named as in C++, so state_dict keys match memcnn-train's checkpoints' names), which
the C++ model is pointed at before every call: .to(), load_state_dict, optimizers and copies work
as usual. For example ``memcnn.RevViT(num_classes=10, in_channels=1, image_size=28, dim=96, depth=6,
heads=3)`` or ``memcnn.models.vit.create('revvit_tiny', num_classes=10, in_channels=1, image_size=28)``.
"""

from memcnn import _C
from memcnn._bridge import check_tensors
from memcnn.models._cpp_network import CppNetwork

__all__ = ['ViT', 'RevViT', 'create', 'names', 'vit_tiny', 'revvit_tiny', 'vit_small', 'revvit_small']


class _Transformer(CppNetwork):
    _reversible = False

    def _build(self, options):
        return _C.transformer(self._reversible, options)

    @staticmethod
    def _parameters_of(network):
        return _C.transformer_parameters(network)

    @staticmethod
    def _bind(network, tensors, training):
        _C.bind_transformer(network, tensors, training)

    @staticmethod
    def _plannable_blocks(network):
        return _C.transformer_plannable_blocks(network)

    def forward(self, images):
        """Class logits [N, num_classes] for images [N, in_channels, image_size, image_size]."""
        check_tensors((images,), type(self).__name__ + '.forward')
        return _C.transformer_forward(self._network(), images)


class ViT(_Transformer):
    """ViT with pre-norm blocks: patch embedding (a patch_size x patch_size convolution of stride
    patch_size), a class token or mean pooling ('class_token' or 'mean'), learned position
    embeddings, blocks x += attention(LayerNorm(x)), x += MLP(LayerNorm(x)) with GELU, dropout and
    stochastic depth (drop_path: the last block's rate, rising linearly from 0), a final LayerNorm
    and a linear head.

    Args:
        num_classes (int): outputs of the head.
        in_channels (int): channels of the images.
        image_size (int): height and width of the (square) images; a multiple of patch_size.
        patch_size (int): side of the patches.
        dim (int): token width; a multiple of heads.
        depth (int): number of blocks.
        heads (int): attention heads.
        mlp_dim (int): hidden width of the MLP.
        pooling (str): 'class_token' or 'mean'.
        dropout (float): dropout after the position embedding, the attention projection and both MLP
            layers, in [0, 1).
        attention_dropout (float): dropout on the attention weights, in [0, 1).
        drop_path (float): stochastic depth of the last block, in [0, 1).
        layer_norm_eps (float): epsilon of every LayerNorm (positive).

    Raises:
        ValueError: naming an invalid option.
    """

    def __init__(self, num_classes=10, in_channels=3, image_size=32, patch_size=4, dim=192, depth=12, heads=3,
                 mlp_dim=768, pooling='class_token', dropout=0.0, attention_dropout=0.0, drop_path=0.0,
                 layer_norm_eps=1e-6):
        super().__init__(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                         patch_size=patch_size, dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim, pooling=pooling,
                         dropout=dropout, attention_dropout=attention_dropout, drop_path=drop_path,
                         layer_norm_eps=layer_norm_eps)


class RevViT(_Transformer):
    """RevViT: ViT's parts as a reversible two-stream stack (y1 = x1 + F(x2), y2 = x2 + G(y1)) in
    memcnn's memory-saving wrapper. merge: how the streams join before the final LayerNorm
    ('concatenate': 2 x dim features, or 'mean'); exact: fixed-point couplings whose gradients with
    memory saving equal those without bit for bit (fraction_bits of the grid); single_node: all blocks
    in one autograd node; memory_saving=False: the same network with a plain autograd graph.

    Args:
        num_classes, in_channels, image_size, patch_size, dim, depth, heads, mlp_dim, pooling,
            dropout, attention_dropout, drop_path, layer_norm_eps: as :class:`ViT`.
        merge (str): 'concatenate' or 'mean'.
        exact (bool): fixed-point couplings (see above).
        fraction_bits (int): fraction bits of the fixed-point grid.
        single_node (bool): all blocks in one wrapper (one autograd node).
        memory_saving (bool): False: the plain computation with a full autograd graph.
        fused_backward (bool): the couplings' fused backward (rebuild and differentiate in one pass).

    Raises:
        ValueError: naming an invalid option. (Random numbers are always replayed when a block is
            rebuilt, so dropout and drop_path are exact under memory saving.)
    """
    _reversible = True

    def __init__(self, num_classes=10, in_channels=3, image_size=32, patch_size=4, dim=192, depth=12, heads=3,
                 mlp_dim=768, pooling='class_token', dropout=0.0, attention_dropout=0.0, drop_path=0.0,
                 layer_norm_eps=1e-6, merge='concatenate', exact=False, fraction_bits=16, single_node=False,
                 memory_saving=True, fused_backward=True):
        super().__init__(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                         patch_size=patch_size, dim=dim, depth=depth, heads=heads, mlp_dim=mlp_dim, pooling=pooling,
                         dropout=dropout, attention_dropout=attention_dropout, drop_path=drop_path,
                         layer_norm_eps=layer_norm_eps, merge=merge, exact=exact, fraction_bits=fraction_bits,
                         single_node=single_node, memory_saving=memory_saving, fused_backward=fused_backward)


def names():
    """The named configurations: vit_tiny, revvit_tiny, vit_small, revvit_small."""
    return list(_C.transformer_names())


def create(name, num_classes=10, in_channels=3, image_size=32, **overrides):
    """A named configuration (the shapes memcnn-train trains) for images of the given size, with
    `overrides` of its options (dim=..., drop_path=..., and RevViT's)."""
    options = dict(_C.transformer_shape(name, num_classes, in_channels, image_size))
    options.update(overrides)
    return (RevViT if _C.is_reversible_transformer(name) else ViT)(**options)


def vit_tiny(num_classes=10, in_channels=3, image_size=32, **overrides):
    """Returns create('vit_tiny', ...): memcnn-train's small ViT (dim 96, depth 6, 3 heads, MLP 192, mean pooling)."""
    return create('vit_tiny', num_classes, in_channels, image_size, **overrides)


def revvit_tiny(num_classes=10, in_channels=3, image_size=32, **overrides):
    """Returns create('revvit_tiny', ...): the RevViT of vit_tiny's shape."""
    return create('revvit_tiny', num_classes, in_channels, image_size, **overrides)


def vit_small(num_classes=10, in_channels=3, image_size=32, **overrides):
    """Returns create('vit_small', ...): ViT-S's shape (dim 384, depth 12, 6 heads, MLP 1536, class token)."""
    return create('vit_small', num_classes, in_channels, image_size, **overrides)


def revvit_small(num_classes=10, in_channels=3, image_size=32, **overrides):
    """Returns create('revvit_small', ...): the RevViT of vit_small's shape."""
    return create('revvit_small', num_classes, in_channels, image_size, **overrides)

