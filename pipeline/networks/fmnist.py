"""Small Fashion-MNIST CNNs with the predictable-layer structure of torchvision's namesakes.

Input is 1x28x28 (normalized with ``FMNIST_MEAN`` / ``FMNIST_STD``), output is ``num_classes`` logits.
Each model keeps the module names torchvision uses for its predictable layers (measurement contract,
section 1), so the layer lists read the same as for the ImageNet models:

* ``alexnet_fmnist``  5 layers:  features.0, .3, .6, .8, .10
* ``vgg16_fmnist``   13 layers:  features.0, .2, .5, .7, .10, .12, .14, .17, .19, .21, .24, .26, .28
* ``resnet18_fmnist`` 17 layers: conv1, layer1.0.conv1, layer1.0.conv2, ..., layer4.1.conv2

Feature-map sizes of the predictable layers (28x28 input):

* alexnet_fmnist: 28, 14, 7, 7, 7
* vgg16_fmnist:   28, 28, 14, 14, 7, 7, 7, 4, 4, 4, 3, 3, 3
* resnet18_fmnist: 28 (stem), 28 x4 (layer1), 14 x4 (layer2), 7 x4 (layer3), 4 x4 (layer4)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

__all__ = [
    "FMNIST_INPUT_SIZE",
    "FMNIST_MEAN",
    "FMNIST_MODELS",
    "FMNIST_STD",
    "AlexNetFMNIST",
    "ResNetFMNIST",
    "VGGFMNIST",
    "alexnet_fmnist",
    "resnet18_fmnist",
    "vgg16_fmnist",
]

# Mean / std of the 60,000 training images' pixel values scaled to [0, 1]
# (computed from train-images-idx3-ubyte.gz: 0.286040 / 0.353024).
FMNIST_MEAN: tuple[float] = (0.2860,)
FMNIST_STD: tuple[float] = (0.3530,)
FMNIST_INPUT_SIZE: tuple[int, int, int] = (1, 28, 28)


def _init_weights(model: nn.Module) -> None:
    """Init for the BN-free models: kaiming-normal (fan_in, ReLU gain) convs with zero bias, so the
    forward signal keeps its scale through the plain conv -> ReLU stacks (torchvision's fan_out
    shrinks it at the 1-channel input conv and VGG-16 without BN then stalls at chance for
    hundreds of steps); Linear layers keep PyTorch's default init."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


# --------------------------------------------------------------------------- AlexNet


class _FeaturesClassifier(nn.Module):
    """torchvision's AlexNet/VGG layout: ``features``, ``avgpool``, then ``classifier``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class AlexNetFMNIST(_FeaturesClassifier):
    """AlexNet layout (5 conv+ReLU, max-pools after conv1, conv2, conv5) scaled to 28x28.

    features index: 0 conv(1->32, 5x5, p2) 28x28 | 2 pool -> 14 | 3 conv(32->64, 5x5, p2) 14x14 |
    5 pool -> 7 | 6 conv(64->96, 3x3) 7x7 | 8 conv(96->96) 7x7 | 10 conv(96->64) 7x7 | 12 pool -> 3.
    """

    def __init__(self, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=5, stride=1, padding=2),  # 0
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),  # 28 -> 14
            nn.Conv2d(32, 64, kernel_size=5, padding=2),  # 3
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),  # 14 -> 7
            nn.Conv2d(64, 96, kernel_size=3, padding=1),  # 6
            nn.ReLU(inplace=True),
            nn.Conv2d(96, 96, kernel_size=3, padding=1),  # 8
            nn.ReLU(inplace=True),
            nn.Conv2d(96, 64, kernel_size=3, padding=1),  # 10
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=2, stride=2),  # 7 -> 3
        )
        self.avgpool = nn.AdaptiveAvgPool2d((3, 3))
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout),
            nn.Linear(64 * 3 * 3, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(256, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, num_classes),
        )
        _init_weights(self)


def alexnet_fmnist(num_classes: int = 10) -> AlexNetFMNIST:
    return AlexNetFMNIST(num_classes=num_classes)


# --------------------------------------------------------------------------- VGG-16


# torchvision's "D" configuration (2, 2, 3, 3, 3 convs) with narrow widths. The five "M" slots keep
# torchvision's feature indices; the pools are adapted to 28x28 so maps stay >= 3x3:
# "M" 2x2/2, "Mc" 2x2/2 ceil_mode (7 -> 4), "M1" 2x2/1 (4 -> 3); the final pool is dropped
# (global average pooling follows), which leaves every conv index unchanged.
_VGG16_FMNIST_CFG: list[int | str] = [
    16, 16, "M",
    32, 32, "M",
    64, 64, 64, "Mc",
    128, 128, 128, "M1",
    128, 128, 128,
]  # fmt: skip


def _vgg_layers(cfg: list[int | str], in_channels: int = 1) -> nn.Sequential:
    layers: list[nn.Module] = []
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        elif v == "Mc":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True))
        elif v == "M1":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=1))
        else:
            assert isinstance(v, int)
            layers += [nn.Conv2d(in_channels, v, kernel_size=3, padding=1), nn.ReLU(inplace=True)]
            in_channels = v
    return nn.Sequential(*layers)


class VGGFMNIST(_FeaturesClassifier):
    """VGG-16 (no BatchNorm, conv -> ReLU) for 28x28; conv indices equal torchvision vgg16's."""

    def __init__(self, num_classes: int = 10, dropout: float = 0.5) -> None:
        super().__init__()
        self.features = _vgg_layers(_VGG16_FMNIST_CFG)
        width = [v for v in _VGG16_FMNIST_CFG if isinstance(v, int)][-1]
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.classifier = nn.Sequential(
            nn.Linear(width, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(256, 256),
            nn.ReLU(inplace=True),
            nn.Dropout(p=dropout),
            nn.Linear(256, num_classes),
        )
        _init_weights(self)


def vgg16_fmnist(num_classes: int = 10) -> VGGFMNIST:
    return VGGFMNIST(num_classes=num_classes)


# --------------------------------------------------------------------------- ResNet-18


class ResNetFMNIST(nn.Module):
    """torchvision ResNet-18 layout built from torchvision's ``BasicBlock``, narrow and for 28x28.

    Stem: 3x3 conv stride 1 (1 -> 16) + BN + ReLU, no max-pool (``maxpool`` is an Identity, kept so
    the module names match torchvision). Stages: 16 @ 28x28, 32 @ 14x14, 64 @ 7x7, 128 @ 4x4.
    """

    def __init__(
        self,
        layers: tuple[int, int, int, int] = (2, 2, 2, 2),
        widths: tuple[int, int, int, int] = (16, 32, 64, 128),
        num_classes: int = 10,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.inplanes = widths[0]
        self.conv1 = nn.Conv2d(1, self.inplanes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()
        self.layer1 = self._make_layer(widths[0], layers[0])
        self.layer2 = self._make_layer(widths[1], layers[1], stride=2)
        self.layer3 = self._make_layer(widths[2], layers[2], stride=2)
        self.layer4 = self._make_layer(widths[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(widths[3] * BasicBlock.expansion, num_classes)

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock) and m.bn2.weight is not None:
                    nn.init.zeros_(m.bn2.weight)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * BasicBlock.expansion:
            downsample = nn.Sequential(
                conv1x1(self.inplanes, planes * BasicBlock.expansion, stride),
                nn.BatchNorm2d(planes * BasicBlock.expansion),
            )
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * BasicBlock.expansion
        for _ in range(1, blocks):
            layers.append(BasicBlock(self.inplanes, planes))
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.bn1(x)
        x = self.relu(x)
        x = self.maxpool(x)

        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.layer4(x)

        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        return self.fc(x)


def resnet18_fmnist(num_classes: int = 10) -> ResNetFMNIST:
    return ResNetFMNIST(num_classes=num_classes)


FMNIST_MODELS: dict[str, Callable[..., nn.Module]] = {
    "alexnet_fmnist": alexnet_fmnist,
    "vgg16_fmnist": vgg16_fmnist,
    "resnet18_fmnist": resnet18_fmnist,
}
