"""Merlin's image encoder: an I3D ResNet-152 (Blankemeier et al., 2024, "Merlin").

Facts from the original (``merlin/models/i3res.py``, ``inflate.py``, ``build.py``): a torchvision
ResNet-152 (Bottleneck, stride on the 3×3 conv) inflated to 3D — stem conv (3, 7, 7) with stride
(1, 2, 2) and padding (1, 3, 3); max pool 3³, stride 2, padding 1; every 3×3 conv becomes
(3, 3, 3) with padding 1 and its spatial stride also applied to depth; 1×1 convs become 1³;
BatchNorm per channel. The encoder receives ``(B, 1, X, Y, Z)`` in RAS order, permutes it to
``(B, 1, Z, X, Y)`` and copies it to 3 channels. Global average pooling gives the 2048-d image
embedding; 1×1×1 convolutions give the 512-d contrastive embedding and the 1692 phenotype logits.
Parameter names follow the released checkpoint (``encode_image.i3_resnet.*``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from voxelfm.core.errors import ConfigError, InputValidationError
from voxelfm.core.geometry import Geometry
from voxelfm.models.backbones.base import ConfigMixin, NativeBackbone, keys_under
from voxelfm.models.backbones.grid import patch_grid


@dataclass(frozen=True)
class MerlinConfig(ConfigMixin):
    """ResNet depth per stage (152: 3, 8, 36, 3), stem width, head sizes; defaults are Merlin's."""

    layers: tuple[int, int, int, int] = (3, 8, 36, 3)
    width: int = 64
    class_nb: int = 1692
    contrastive_dim: int = 512
    input_size: tuple[int, int, int] = (224, 224, 160)

    def __post_init__(self) -> None:
        if len(self.layers) != 4 or min(self.layers) < 1 or self.width < 1:
            raise ConfigError(f"layers must be 4 positive block counts and width >= 1, got {self.layers}, {self.width}")

    @property
    def out_channels(self) -> int:
        return self.width * 8 * 4


def _bn(channels: int) -> nn.BatchNorm3d:
    return nn.BatchNorm3d(channels)


class _Bottleneck(nn.Module):
    def __init__(self, inplanes: int, planes: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(inplanes, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv3d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = _bn(planes * 4)
        self.downsample = (nn.Sequential(nn.Conv3d(inplanes, planes * 4, 1, stride=stride, bias=False), _bn(planes * 4))
                           if downsample else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        residual = self.downsample(x) if self.downsample is not None else x
        return F.relu(out + residual)


class MerlinI3ResNet(NativeBackbone):
    """Merlin image encoder. Input ``(B, 1, 224, 224, 160)`` RAS (X, Y, Z) in [0, 1]; ``cls`` = 2048-d pooled."""

    name = "merlin"
    config_class = MerlinConfig

    def __init__(self, config: MerlinConfig) -> None:
        super().__init__(config)
        w = config.width
        self.conv1 = nn.Conv3d(3, w, (3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3), bias=False)
        self.bn1 = _bn(w)
        inplanes = w
        for index, (blocks, stride) in enumerate(zip(config.layers, (1, 2, 2, 2), strict=True)):
            planes = w * 2 ** index
            layer = [_Bottleneck(inplanes, planes, stride, downsample=True)]
            inplanes = planes * 4
            layer += [_Bottleneck(inplanes, planes, 1, downsample=False) for _ in range(blocks - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
        self.classifier = nn.Conv3d(inplanes, config.class_nb, 1)
        self.contrastive_head = nn.Conv3d(inplanes, config.contrastive_dim, 1)

    @property
    def embed_dim(self) -> int:
        return int(self.config.out_channels)

    def expected_input(self) -> tuple[int | None, ...]:
        return (1, None, None, None)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        if min(x.shape[2:4]) < 32 or x.shape[4] < 16:
            raise InputValidationError(f"merlin input (X, Y, Z) = {tuple(x.shape[2:])} is smaller than one cell (32, 32, 16)")

    def features(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.permute(0, 1, 4, 2, 3)  # (B, 1, X, Y, Z) -> (B, 1, Z, X, Y), as the original
        x = torch.cat((x, x, x), dim=1)
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool3d(x, 3, stride=2, padding=1)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            x = getattr(self, name)(x)
        pooled = x.mean(dim=(2, 3, 4), keepdim=True)
        return {
            "cls": pooled.flatten(1),
            "patch": x.permute(0, 2, 3, 4, 1),  # grid (Z, X, Y)
            "contrastive": self.contrastive_head(pooled).flatten(1),
            "phenotype_logits": self.classifier(pooled).flatten(1),
        }

    def patch_geometry(self, input_geometry: Geometry, grid: tuple[int, int, int]) -> Geometry:
        # grid axes (Z, X, Y) are native axes (2, 0, 1); cells of 16 slices and 32 x 32 voxels
        return patch_grid(input_geometry, (16, 32, 32), grid, axes=(2, 0, 1))

    def describe(self) -> str:
        c = self.config
        return (f"Merlin I3D ResNet (stages {list(c.layers)}, width {c.width}): {c.out_channels}-d pooled feature, "
                f"{c.contrastive_dim}-d contrastive head, {c.class_nb} phenotype logits; input RAS X, Y, Z")


_ROOTS = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.", "classifier.", "contrastive_head.")


def convert_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Merlin's released ``.pt`` (``encode_image.i3_resnet.*`` + text keys, or unprefixed) → encoder keys."""
    return keys_under(state, "i3_resnet.", _ROOTS)
