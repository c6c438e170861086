"""ResNet and RevNet for CIFAR-style classification (MemCNN's memcnn.models.resnet): the residual
networks of He et al. and the reversible ones of Gomez et al., "The Reversible Residual Network:
Backpropagation without Storing Activations" (NIPS 2017).

Same classes, arguments, defaults, attribute names (so state_dict keys match MemCNN's checkpoints)
and behaviour as MemCNN 1.5.2. A RevNet's reversible blocks are memcnn.InvertibleModuleWrapper
around an additive coupling: the memory-saving autograd function and the coupling's fused backward
run in memcnn's C++ core, calling the Python residual branches below. The fixes of that core hold
here too: BatchNorm statistics are updated once per step, a block input that an earlier operation
saved (the stem's ReLU output before the first block) is kept instead of freed (MemCNN's crash,
its issue #70), and torch.autograd.grad works through the blocks.

Extension: ResNet(..., in_channels=3) for inputs with another number of channels (Fashion-MNIST)."""

import math

import torch.nn as nn

from memcnn.models.revop import InvertibleModuleWrapper, create_coupling

__all__ = ['ResNet', 'BasicBlock', 'Bottleneck', 'RevBasicBlock', 'RevBottleneck', 'BasicBlockSub', 'BottleneckSub',
           'conv3x3', 'batch_norm']


def conv3x3(in_planes, out_planes, stride=1):
    """A 3x3 convolution without bias whose padding keeps the size (at stride 1)."""
    return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)


def batch_norm(x):
    """BatchNorm2d over x channels with MemCNN's TensorFlow-like settings (momentum 0.99, eps 1e-3);
    ResNet.configure() sets them again according to batch_norm_fix."""
    return nn.BatchNorm2d(x, momentum=0.99, eps=0.001)


class BasicBlockSub(nn.Module):
    """The residual branch of a basic block, pre-activation: [BN, ReLU,] conv3x3, BN, ReLU, conv3x3
    (without the first BN and ReLU when noactivation)."""

    def __init__(self, inplanes, planes, stride=1, noactivation=False):
        super(BasicBlockSub, self).__init__()
        self.noactivation = noactivation
        if not noactivation:
            self.bn1 = batch_norm(inplanes)
        self.conv1 = conv3x3(inplanes, planes, stride)
        self.bn2 = batch_norm(planes)
        self.conv2 = conv3x3(planes, planes)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        """Returns the branch's output for x [N, inplanes, H, W]: [N, planes, H / stride, W / stride]."""
        if not self.noactivation:
            x = self.relu(self.bn1(x))
        x = self.relu(self.bn2(self.conv1(x)))
        return self.conv2(x)


class BottleneckSub(nn.Module):
    """The residual branch of a bottleneck block, pre-activation: [BN, ReLU,] conv1x1, BN, ReLU,
    conv3x3 (carrying the stride), BN, ReLU, conv1x1 to 4 * planes channels."""

    def __init__(self, inplanes, planes, stride=1, noactivation=False):
        super(BottleneckSub, self).__init__()
        self.noactivation = noactivation
        if not noactivation:
            self.bn1 = batch_norm(inplanes)
        self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
        self.bn2 = batch_norm(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn3 = batch_norm(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        """Returns the branch's output for x [N, inplanes, H, W]: [N, 4 * planes, H / stride, W / stride]."""
        if not self.noactivation:
            x = self.relu(self.bn1(x))
        x = self.relu(self.bn2(self.conv1(x)))
        x = self.relu(self.bn3(self.conv2(x)))
        return self.conv3(x)


class _Residual(nn.Module):
    """out = branch(x) + (downsample(x) if downsample else x); the branch's attribute name is the
    subclass's (basicblock_sub / bottleneck_sub, as in MemCNN's checkpoints)."""

    _sub = None
    _branch = None

    def __init__(self, inplanes, planes, stride=1, downsample=None, noactivation=False):
        super(_Residual, self).__init__()
        setattr(self, self._branch, self._sub(inplanes, planes, stride, noactivation))
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        """Returns branch(x) + shortcut(x), the shortcut being downsample(x) or x itself."""
        out = getattr(self, self._branch)(x)
        out += x if self.downsample is None else self.downsample(x)
        return out


class BasicBlock(_Residual):
    """A residual block with a BasicBlockSub branch (MemCNN's; expansion 1).

    Args:
        inplanes (int): input channels.
        planes (int): the branch's width (output channels).
        stride (int): stride of the branch's first convolution.
        downsample (torch.nn.Module, optional): the shortcut's projection; None: the identity.
        noactivation (bool): the branch without its leading BN and ReLU.
    """
    expansion = 1
    _sub = BasicBlockSub
    _branch = 'basicblock_sub'


class Bottleneck(_Residual):
    """A residual block with a BottleneckSub branch (MemCNN's; expansion 4: 4 * planes outputs).

    Arguments as :class:`BasicBlock`.
    """
    expansion = 4
    _sub = BottleneckSub
    _branch = 'bottleneck_sub'


class _Reversible(nn.Module):
    """A RevNet block. Where the shape is kept (no downsample, stride 1) it is reversible: an
    additive coupling of two branches over half the channels each, wrapped so that its input is
    freed in training and rebuilt from its output in backward (attribute revblock). Otherwise it is
    an ordinary residual block (attribute basicblock_sub / bottleneck_sub, plus downsample)."""

    _sub = None
    _branch = None

    def __init__(self, inplanes, planes, stride=1, downsample=None, noactivation=False):
        super(_Reversible, self).__init__()
        if downsample is None and stride == 1:
            gm = self._sub(inplanes // 2, planes // 2, stride, noactivation)
            fm = self._sub(inplanes // 2, planes // 2, stride, noactivation)
            self.revblock = InvertibleModuleWrapper(fn=create_coupling(Fm=fm, Gm=gm, coupling='additive'),
                                                    keep_input=False)
        else:
            setattr(self, self._branch, self._sub(inplanes, planes, stride, noactivation))
        self.downsample = downsample
        self.stride = stride

    def forward(self, x):
        """Returns the block's output: the wrapped coupling's where the block is reversible, else
        branch(x) + downsample(x)."""
        if self.downsample is None:
            return self.revblock(x)
        out = getattr(self, self._branch)(x)
        out += self.downsample(x)
        return out


class RevBasicBlock(_Reversible):
    """A RevNet block with BasicBlockSub branches. Where the shape is kept (downsample None, stride 1)
    it is an additive coupling of two half-width branches in an InvertibleModuleWrapper (attribute
    revblock), whose input is freed in training and rebuilt in backward; otherwise a residual block
    like BasicBlock.

    Arguments as :class:`BasicBlock`.
    """
    expansion = 1
    _sub = BasicBlockSub
    _branch = 'basicblock_sub'


class RevBottleneck(_Reversible):
    """A RevNet block with BottleneckSub branches (expansion 4), reversible as :class:`RevBasicBlock`.

    Arguments as :class:`BasicBlock`.
    """
    expansion = 4
    _sub = BottleneckSub
    _branch = 'bottleneck_sub'


class ResNet(nn.Module):
    """A stem (conv init_kernel_size x init_kernel_size at strides[0], BN, ReLU, optionally a 3x3
    max pool), then 3 or 4 stages of `block`s (layers[i] blocks at channels_per_layer[i + 1]
    planes, the first at strides[i + 1]; the first stage's first block without pre-activation),
    a final BN and ReLU, global average pooling and a linear classifier.

    channels_per_layer defaults to [64, 64, 128, 256, 512][:len(layers) + 1], strides to 2 everywhere.
    batch_norm_fix: BatchNorm momentum 0.99 and eps 1e-3 (MemCNN's TensorFlow-like setting)
    instead of PyTorch's 0.1 and 1e-5. implementation: kept as an attribute of every
    InvertibleModuleWrapper, as MemCNN does (it selects nothing). in_channels (memcnn): channels
    of the input images.

    Args:
        block (type): the block class: BasicBlock, Bottleneck, RevBasicBlock or RevBottleneck.
        layers (list of int): blocks per stage, 3 or 4 stages.
        num_classes (int): outputs of the linear classifier.
        channels_per_layer (list of int, optional): the stem's width, then each stage's planes.
        strides (list of int, optional): the stem's stride, then each stage's.
        init_max_pool (bool): a 3x3 max pool of stride 2 after the stem.
        init_kernel_size (int): the stem convolution's kernel size.
        batch_norm_fix (bool): MemCNN's TensorFlow-like BatchNorm settings (see above).
        implementation (int): stored on every InvertibleModuleWrapper (selects nothing).
        in_channels (int): channels of the input images.

    Raises:
        ValueError: when layers does not list 3 or 4 stages, or channels_per_layer does not hold
            len(layers) + 1 entries.
    """
    def __init__(self, block, layers, num_classes=1000, channels_per_layer=None, strides=None,
                 init_max_pool=False, init_kernel_size=7, batch_norm_fix=True, implementation=0, in_channels=3):
        if channels_per_layer is None:
            widths = [2 ** (i + 6) for i in range(len(layers))]
            channels_per_layer = [widths[0]] + widths
        if strides is None:
            strides = [2] * len(channels_per_layer)
        if len(channels_per_layer) != len(layers) + 1:
            raise ValueError('ResNet: channels_per_layer needs len(layers) + 1 = {} entries (the stem\'s and one '
                             'per stage), got {}'.format(len(layers) + 1, len(channels_per_layer)))
        if len(layers) not in (3, 4):
            raise ValueError('ResNet: layers must list 3 or 4 stages, got {}'.format(len(layers)))
        self.batch_norm_fix = batch_norm_fix
        self.channels_per_layer = channels_per_layer
        self.strides = strides
        self.init_max_pool = init_max_pool
        self.implementation = implementation
        self.inplanes = channels_per_layer[0]
        super(ResNet, self).__init__()
        self.conv1 = nn.Conv2d(in_channels, self.inplanes, kernel_size=init_kernel_size, stride=strides[0],
                               padding=(init_kernel_size - 1) // 2, bias=False)
        self.bn1 = batch_norm(self.inplanes)
        self.relu = nn.ReLU(inplace=False)
        if init_max_pool:
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, channels_per_layer[1], layers[0], stride=strides[1], noactivation=True)
        self.layer2 = self._make_layer(block, channels_per_layer[2], layers[1], stride=strides[2])
        self.layer3 = self._make_layer(block, channels_per_layer[3], layers[2], stride=strides[3])
        self.has_4_layers = len(layers) >= 4
        if self.has_4_layers:
            self.layer4 = self._make_layer(block, channels_per_layer[4], layers[3], stride=strides[4])
        self.bn_final = batch_norm(self.inplanes)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(channels_per_layer[-1] * block.expansion, num_classes)

        self.configure()
        self.init_weights()

    def init_weights(self):
        """He initialisation of the convolutions (normal, std sqrt(2 / (k * k * out_channels))),
        BatchNorm reset to weight 1, bias 0 and fresh running statistics."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2. / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.reset_parameters()

    def configure(self):
        """Sets `implementation` on every InvertibleModuleWrapper and every BatchNorm's momentum and
        eps according to batch_norm_fix."""
        momentum, eps = (0.99, 0.001) if self.batch_norm_fix else (0.1, 1e-05)
        for m in self.modules():
            if isinstance(m, InvertibleModuleWrapper):
                m.implementation = self.implementation
            elif isinstance(m, nn.BatchNorm2d):
                m.momentum = momentum
                m.eps = eps

    def _make_layer(self, block, planes, blocks, stride=1, noactivation=False):
        """A stage of `blocks` blocks; the first changes the resolution or width when needed, with a
        1x1 convolution and BN projecting the shortcut."""
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, kernel_size=1, stride=stride, bias=False),
                batch_norm(planes * block.expansion),
            )
        stage = [block(self.inplanes, planes, stride, downsample, noactivation)]
        self.inplanes = planes * block.expansion
        stage += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*stage)

    def forward(self, x):
        """Returns the logits [N, num_classes] for images x [N, in_channels, H, W]."""
        x = self.relu(self.bn1(self.conv1(x)))
        if self.init_max_pool:
            x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        if self.has_4_layers:
            x = self.layer4(x)
        x = self.relu(self.bn_final(x))
        x = self.avgpool(x)
        return self.fc(x.view(x.size(0), -1))
