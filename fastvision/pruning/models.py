"""Small ResNet- and VGG-style classifiers, the standard subjects of channel-pruning papers (both AutoBot, arXiv
2111.09635, and FTWT, arXiv 2110.08232, report VGG-16-BN and ResNets on CIFAR-10), sized for 8x8 digit scans.

The ResNet has identity shortcuts inside each stage, so its block outputs are tied channel components; the VGG has
none. Both end in global average pooling and one linear classifier.
"""

from __future__ import annotations

from torch import nn


def conv_bn_relu(in_chs: int, out_chs: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False), nn.BatchNorm2d(out_chs), nn.ReLU())


class BasicBlock(nn.Module):
    """ResNet's basic block (He et al., arXiv 1512.03385): two 3x3 convs and a shortcut (projected when it must)."""

    def __init__(self, in_chs: int, out_chs: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn_relu(in_chs, out_chs, stride)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_chs)
        self.shortcut = nn.Identity()
        if stride != 1 or in_chs != out_chs:
            self.shortcut = nn.Sequential(nn.Conv2d(in_chs, out_chs, 1, stride, bias=False), nn.BatchNorm2d(out_chs))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.bn2(self.conv2(self.conv1(x))) + self.shortcut(x))


class SmallResNet(nn.Module):
    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), blocks: int = 2, num_classes: int = 10,
                 in_chans: int = 1) -> None:  # fmt: skip
        super().__init__()
        self.stem = conv_bn_relu(in_chans, widths[0])
        layers, channels = [], widths[0]
        for stage, width in enumerate(widths):
            for index in range(blocks):
                layers.append(BasicBlock(channels, width, stride=2 if stage and index == 0 else 1))
                channels = width
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.layers(self.stem(x)))))


class SmallVGG(nn.Module):
    """VGG-style (Simonyan and Zisserman, arXiv 1409.1556): 3x3 conv-BN-ReLU pairs, max pooling between stages."""

    def __init__(self, widths: tuple[int, ...] = (32, 64, 128), num_classes: int = 10, in_chans: int = 1) -> None:
        super().__init__()
        layers, channels = [], in_chans
        for stage, width in enumerate(widths):
            if stage:
                layers.append(nn.MaxPool2d(2))
            layers += [conv_bn_relu(channels, width), conv_bn_relu(width, width)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.features(x))))
