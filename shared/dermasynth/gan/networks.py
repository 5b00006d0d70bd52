"""Pure modules of the class-conditional GAN (no training logic here).

* :class:`Generator`: StyleGAN2-style. A mapping network turns a latent ``z`` and a learned class
  embedding into a style ``w``; a synthesis network grows a learned 4x4 constant to the output size
  with modulated, demodulated 3x3 convolutions and sums RGB outputs over resolutions ("skip"
  architecture). Layers use equalized learning rate. Truncation pulls ``w`` towards the mean style of
  its class.
* :class:`Discriminator`: residual blocks down to 4x4, minibatch standard deviation, and a
  projection head (Miyato & Koyama 2018): ``D(x, y) = psi(h) + <embed(y), h>``. Every weight is
  spectrally normalized.

Images are ``(N, 3, S, S)`` floats, nominally in [-1, 1]; class labels are ``(N,)`` int64 indices.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from dermasynth.gan.config import IMAGE_SIZES

MIN_CHANNELS = 4
TRUNCATION_SAMPLES = 1024
TRUNCATION_SEED = 20_240_601
_LRELU_GAIN = math.sqrt(2.0)


def channels_at(resolution: int, channel_base: int, max_channels: int) -> int:
    """Feature maps at a resolution: ``min(max_channels, channel_base // resolution)``, at least 4."""
    return max(MIN_CHANNELS, min(max_channels, channel_base // resolution))


def _check_size(image_size: int) -> int:
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size {image_size} is not supported; choose one of {', '.join(map(str, IMAGE_SIZES))}")
    return int(math.log2(image_size))


def _check_labels(labels: Tensor, num_classes: int, batch: int) -> None:
    if labels.shape != (batch,) or labels.dtype != torch.long:
        raise ValueError(
            f"labels must be an int64 tensor of shape ({batch},), got {tuple(labels.shape)} {labels.dtype}"
        )
    if batch and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got {labels.tolist()}")


def _normalize_2nd_moment(x: Tensor, eps: float = 1e-8) -> Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


class EqualizedLinear(nn.Module):
    """A linear layer whose weights are scaled at run time (equalized learning rate, Karras et al.)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        bias_init: float = 0.0,
        lr_multiplier: float = 1.0,
        activation: bool = False,
    ) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_multiplier))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier
        self.activation = activation

    def forward(self, x: Tensor) -> Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.bias_gain)
        return F.leaky_relu(x, 0.2) * _LRELU_GAIN if self.activation else x


class MappingNetwork(nn.Module):
    """(z, class) -> style w: both normalized, concatenated, and passed through an MLP."""

    def __init__(self, z_dim: int, num_classes: int, w_dim: int, layers: int) -> None:
        super().__init__()
        self.z_dim, self.w_dim = z_dim, w_dim
        self.embed = nn.Embedding(num_classes, w_dim)
        nn.init.normal_(self.embed.weight)
        dims = [z_dim + w_dim] + [w_dim] * layers
        self.net = nn.Sequential(
            *[EqualizedLinear(a, b, lr_multiplier=0.01, activation=True) for a, b in itertools.pairwise(dims)]
        )

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        x = torch.cat([_normalize_2nd_moment(z), _normalize_2nd_moment(self.embed(labels))], dim=1)
        return self.net(x)


class ModulatedConv2d(nn.Module):
    """A convolution whose input channels are scaled by a style and whose output is demodulated.

    Implemented as scale -> shared convolution -> per-sample rescale (StyleGAN2's non-fused form),
    which is a plain ``conv2d`` and fast on CPU as well as GPU.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        w_dim: int,
        *,
        upsample: bool = False,
        demodulate: bool = True,
        activation: bool = True,
    ) -> None:
        super().__init__()
        self.affine = EqualizedLinear(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size * kernel_size)
        self.upsample, self.demodulate, self.activation = upsample, demodulate, activation
        self.padding = kernel_size // 2

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        styles = self.affine(w)
        if not self.demodulate:  # toRGB: StyleGAN2 scales these styles down instead of demodulating
            styles = styles * self.weight_gain
        weight = self.weight * self.weight_gain
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = F.conv2d(x * styles[:, :, None, None].to(x.dtype), weight.to(x.dtype), padding=self.padding)
        if self.demodulate:
            # sum over inputs and taps of (w * s)^2, as one small matmul: s^2 @ (sum of w^2 over taps)^T
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
            x = x * dcoefs[:, :, None, None].to(x.dtype)
        x = x + self.bias[None, :, None, None].to(x.dtype)
        return F.leaky_relu(x, 0.2) * _LRELU_GAIN if self.activation else x


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (upsample +) two modulated convs and an RGB output."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, *, first: bool) -> None:
        super().__init__()
        self.conv0 = None if first else ModulatedConv2d(in_channels, out_channels, 3, w_dim, upsample=True)
        self.conv1 = ModulatedConv2d(in_channels if first else out_channels, out_channels, 3, w_dim)
        self.to_rgb = ModulatedConv2d(out_channels, 3, 1, w_dim, demodulate=False, activation=False)

    def forward(self, x: Tensor, img: Tensor | None, w: Tensor) -> tuple[Tensor, Tensor]:
        if self.conv0 is not None:
            x = self.conv0(x, w)
        x = self.conv1(x, w)
        rgb = self.to_rgb(x, w)
        if img is not None:
            rgb = rgb + F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
        return x, rgb


class Generator(nn.Module):
    """Class-conditional style-based generator.

    Args:
        num_classes: number of classes (label indices 0..num_classes-1).
        image_size: output side, one of 16, 32, 64, 128, 256.
        z_dim: latent size.
        w_dim: style size (also the class embedding's size).
        mapping_layers: depth of the mapping MLP.
        channel_base, max_channels: width; see :func:`channels_at`.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        *,
        z_dim: int = 128,
        w_dim: int = 256,
        mapping_layers: int = 2,
        channel_base: int = 2048,
        max_channels: int = 128,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        levels = _check_size(image_size)
        self.num_classes, self.image_size, self.z_dim, self.w_dim = num_classes, image_size, z_dim, w_dim
        self.mapping = MappingNetwork(z_dim, num_classes, w_dim, mapping_layers)
        resolutions = [2**i for i in range(2, levels + 1)]
        channels = [channels_at(r, channel_base, max_channels) for r in resolutions]
        self.const = nn.Parameter(torch.randn(channels[0], 4, 4))
        self.blocks = nn.ModuleList(
            SynthesisBlock(channels[max(i - 1, 0)], channels[i], w_dim, first=i == 0) for i in range(len(resolutions))
        )

    def synthesize(self, w: Tensor) -> Tensor:
        """Styles (N, w_dim) -> images (N, 3, S, S)."""
        x = self.const[None].expand(w.shape[0], -1, -1, -1)
        img: Tensor | None = None
        for block in self.blocks:
            x, img = block(x, img, w)
        assert img is not None
        return img

    @torch.no_grad()
    def class_mean_w(self, labels: Tensor) -> Tensor:
        """The mean style of each label's class over a fixed set of latents (the truncation centre)."""
        rng = torch.Generator().manual_seed(TRUNCATION_SEED)
        z = torch.randn(TRUNCATION_SAMPLES, self.z_dim, generator=rng).to(labels.device)
        out = torch.empty(labels.shape[0], self.w_dim, device=labels.device)
        for label in labels.unique():
            w = self.mapping(z, label.expand(TRUNCATION_SAMPLES))
            out[labels == label] = w.mean(dim=0).to(out.dtype)
        return out

    def forward(self, z: Tensor, labels: Tensor, truncation: float = 1.0) -> Tensor:
        """Latents (N, z_dim) and labels (N,) -> images (N, 3, S, S).

        ``truncation`` < 1 trades variety for typicality: ``w = mean_w(class) + truncation * (w - mean_w)``.
        """
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must have shape (N, {self.z_dim}), got {tuple(z.shape)}")
        _check_labels(labels, self.num_classes, z.shape[0])
        if not 0.0 <= truncation <= 1.0:
            raise ValueError(f"truncation must lie in [0, 1], got {truncation}")
        w = self.mapping(z, labels)
        if truncation != 1.0:
            centre = self.class_mean_w(labels)
            w = centre + truncation * (w - centre)
        return self.synthesize(w)


class MinibatchStd(nn.Module):
    """Appends the standard deviation of features across groups of samples as one more channel."""

    def __init__(self, group_size: int = 4) -> None:
        super().__init__()
        self.group_size = group_size

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        group = next(g for g in range(min(self.group_size, n), 0, -1) if n % g == 0)
        y = x.float().reshape(group, n // group, *x.shape[1:])
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=[1, 2, 3])
        y = y.reshape(-1, 1, 1, 1).repeat(group, 1, h, w).to(x.dtype)
        return torch.cat([x, y], dim=1)


def _downsample(x: Tensor) -> Tensor:
    """2x2 average pooling scaled by 2: 1-Lipschitz like the spectrally normalized layers around it.

    Plain average pooling halves the norm of smooth feature maps at every block, so a deep spectrally
    normalized discriminator would only ever output tiny logits and learn far slower than the generator.
    """
    return F.avg_pool2d(x, 2) * 2


class DiscriminatorBlock(nn.Module):
    """Residual down-sampling block: two 3x3 convs and a 1x1 skip, both halving the resolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv0 = spectral_norm(nn.Conv2d(in_channels, in_channels, 3, padding=1))
        self.conv1 = spectral_norm(nn.Conv2d(in_channels, out_channels, 3, padding=1))
        self.skip = spectral_norm(nn.Conv2d(in_channels, out_channels, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        skip = _downsample(self.skip(x))
        x = F.leaky_relu(self.conv0(x), 0.2)
        x = _downsample(F.leaky_relu(self.conv1(x), 0.2))
        return (x + skip) / math.sqrt(2.0)


class Discriminator(nn.Module):
    """Projection discriminator with spectral normalization: images and labels -> one logit each.

    Args:
        num_classes: number of classes.
        image_size: input side, one of 16, 32, 64, 128, 256.
        channel_base, max_channels: width; see :func:`channels_at`.
        mbstd_group: group size of the minibatch standard deviation layer.
    """

    def __init__(
        self,
        num_classes: int,
        image_size: int,
        *,
        channel_base: int = 2048,
        max_channels: int = 128,
        mbstd_group: int = 4,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        levels = _check_size(image_size)
        self.num_classes, self.image_size = num_classes, image_size
        resolutions = [2**i for i in range(levels, 1, -1)]  # S ... 4
        channels = [channels_at(r, channel_base, max_channels) for r in resolutions]
        self.from_rgb = spectral_norm(nn.Conv2d(3, channels[0], 1))
        self.blocks = nn.Sequential(*[DiscriminatorBlock(a, b) for a, b in itertools.pairwise(channels)])
        top = channels[-1]
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = spectral_norm(nn.Conv2d(top + 1, top, 3, padding=1))
        self.fc = spectral_norm(nn.Linear(top * 16, top))
        self.out = spectral_norm(nn.Linear(top, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, top))

    def forward(self, img: Tensor, labels: Tensor) -> Tensor:
        """Images (N, 3, S, S) and labels (N,) -> logits (N,)."""
        if img.ndim != 4 or img.shape[1:] != (3, self.image_size, self.image_size):
            raise ValueError(
                f"images must have shape (N, 3, {self.image_size}, {self.image_size}), got {tuple(img.shape)}"
            )
        _check_labels(labels, self.num_classes, img.shape[0])
        x = F.leaky_relu(self.from_rgb(img), 0.2)
        x = self.blocks(x)
        x = F.leaky_relu(self.conv(self.mbstd(x)), 0.2)
        h = F.leaky_relu(self.fc(x.flatten(1)), 0.2)
        return self.out(h).squeeze(1) + (self.embed(labels) * h).sum(dim=1)
