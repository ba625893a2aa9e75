"""Building blocks shared by the analysis/synthesis transforms."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def deconv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, k, stride=stride, padding=k // 2, output_padding=stride - 1)


class SubPixelConv(nn.Sequential):
    """x2 upsampling as a k x k conv to 4 * cout channels then a pixel shuffle (Shi et al. 2016):
    the same family of maps as a stride-2 transposed conv, computed as one dense conv at the low
    resolution, which CPU conv kernels run several times faster than a transposed conv."""

    def __init__(self, cin: int, cout: int, k: int = 3):
        super().__init__(nn.Conv2d(cin, 4 * cout, k, padding=k // 2), nn.PixelShuffle(2))


class Upsample(nn.Module):
    """Nearest x2 then 3x3 conv: same parameter count as a strided conv, no checkerboard."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = conv(cin, cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


def resample(cin: int, cout: int, direction: str) -> nn.Module:
    return conv(cin, cout, 3, 2) if direction == "down" else Upsample(cin, cout)


class PostActBlock(nn.Module):
    """ResNet (post-activation) block: conv-BN-ReLU-conv-BN (+ skip) -> ReLU.
    With ``direction`` 'down'/'up' the first conv resamples and the skip is projected."""

    def __init__(self, cin: int, cout: int, direction: str | None = None):
        super().__init__()
        self.conv1 = resample(cin, cout, direction) if direction else conv(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = conv(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (resample(cin, cout, direction) if direction == "up" else nn.Conv2d(cin, cout, 1, 2)) \
            if direction else (nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.skip(x))


class PreActBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016): BN-ReLU-conv-BN-ReLU-conv (+ skip)."""

    def __init__(self, cin: int, cout: int, direction: str | None = None):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = resample(cin, cout, direction) if direction else conv(cin, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = conv(cout, cout)
        self.skip = (resample(cin, cout, direction) if direction == "up" else nn.Conv2d(cin, cout, 1, 2)) \
            if direction else (nn.Identity() if cin == cout else nn.Conv2d(cin, cout, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.bn1(x)))
        out = self.conv2(F.relu(self.bn2(out)))
        return out + self.skip(x)


class CBAM(nn.Module):
    """Convolutional Block Attention Module (Woo et al. 2018): channel then spatial attention."""

    def __init__(self, channels: int, reduction: int = 16, kernel: int = 7):
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.mlp = nn.Sequential(nn.Conv2d(channels, hidden, 1), nn.ReLU(inplace=True), nn.Conv2d(hidden, channels, 1))
        self.spatial = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        att = self.mlp(F.adaptive_avg_pool2d(x, 1)) + self.mlp(F.adaptive_max_pool2d(x, 1))
        x = x * torch.sigmoid(att)
        s = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.spatial(s))


class GDN(nn.Module):
    """Generalized divisive normalisation (Ballé et al. 2016), simplified parametrisation
    (Johnston et al. 2019): y = x / sqrt(beta + gamma * x^2); inverse multiplies."""

    def __init__(self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1):
        super().__init__()
        self.inverse = inverse
        self.beta_min = beta_min
        self.beta = nn.Parameter(torch.ones(channels))
        self.gamma = nn.Parameter(gamma_init * torch.eye(channels).view(channels, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = F.softplus(self.beta) + self.beta_min  # keeps the normaliser positive
        gamma = F.relu(self.gamma)
        norm = F.conv2d(x * x, gamma, beta)
        # in place when no gradient is recorded (inference): the same values, one buffer fewer
        norm = norm.sqrt_() if not torch.is_grad_enabled() else torch.sqrt(norm)
        return x * norm if self.inverse else x / norm
