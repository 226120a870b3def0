"""Channel pruning (issue #10): the channel graph, the MAC model against the counter, physical surgery, AutoBot to a
MACs target, FTWT's per-input MACs, bad input, and the experiment's smoke run."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

from fastvision.flops.counter import measure_flops
from fastvision.pruning import AutoBotSettings, FTWTSettings, autobot, ftwt, trace_channels
from fastvision.pruning.autobot import flops_loss
from fastvision.pruning.ftwt import mass_target
from fastvision.pruning.macs import MacModel
from fastvision.pruning.models import SmallResNet, SmallVGG
from fastvision.pruning.surgery import prune_channels


def _macs(model: nn.Module, x: torch.Tensor) -> int:
    with torch.no_grad():
        return measure_flops(lambda: model.eval()(x[:1]))[0].macs


def _data(count: int = 96, size: int = 8, channels: int = 1, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Learnable toy data: the class is the quadrant with the brightest blob."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (count,), generator=generator)
    images = torch.rand(count, channels, size, size, generator=generator) * 0.3
    half = size // 2
    for index, label in enumerate(labels.tolist()):
        row, col = divmod(label, 2)
        images[index, :, row * half : (row + 1) * half, col * half : (col + 1) * half] += 1.0
    return images, labels


def test_residual_channels_are_tied_and_the_ends_frozen() -> None:
    model = SmallResNet(widths=(8, 16), blocks=2, num_classes=4)
    graph = trace_channels(model, torch.randn(2, 1, 8, 8))
    stem = graph.calls["stem.0"]
    shortcut_free = graph.calls["layers.0.conv2"]  # its output is summed with the stem's (identity shortcut)
    assert all(graph.root(a) == graph.root(b) for a, b in zip(stem.outputs, shortcut_free.outputs, strict=True))
    assert len(graph.components[graph.root(stem.outputs[0])]) == 3  # stem + two blocks' conv2
    inner = graph.calls["layers.0.conv1.0"]
    assert all(len(graph.components[graph.root(n)]) == 1 for n in inner.outputs)  # inside a block: free
    assert not any(graph.prunable(n) for n in graph.calls["fc"].outputs)  # the logits are frozen


def _parameternet() -> nn.Module:
    from fastvision.backbones import create_backbone

    return create_backbone("parameternet_600m", num_classes=4)


@pytest.mark.parametrize(
    ("network", "x"),
    [
        (lambda: SmallResNet(widths=(8, 16, 16), num_classes=4), torch.randn(3, 1, 8, 8)),
        (lambda: SmallVGG(widths=(8, 16, 16), num_classes=4), torch.randn(3, 1, 8, 8)),
        (_parameternet, torch.randn(3, 3, 32, 32)),  # DynamicConvs, Ghost modules (cat), SE (mul), shortcuts
    ],
    ids=["resnet", "vgg", "parameternet_600m"],
)
def test_mac_model_and_surgery_agree_with_the_counter(network, x: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = network().eval()
    graph = trace_channels(model, x)
    mac_model = MacModel(graph)
    assert float(mac_model.macs(torch.ones(mac_model.num_components))) == _macs(model, x)
    dropped = {root for index, root in enumerate(mac_model.roots) if index % 3 == 0}
    keep = torch.tensor([0.0 if root in dropped else 1.0 for root in mac_model.roots])
    pruned = prune_channels(copy.deepcopy(model), graph, dropped)
    assert _macs(pruned, x) == float(mac_model.macs(keep)) < _macs(model, x)
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in model.parameters())
    assert pruned(x).shape == (3, 4)
    assert len(graph.prunable_layers) == len(graph.calls) - 1  # every layer but the classifier


def test_pruning_dead_channels_changes_nothing() -> None:
    """Channels whose BatchNorm outputs exactly zero can be removed without changing a single logit."""
    torch.manual_seed(0)
    model, x = SmallVGG(widths=(8, 16), num_classes=4).eval(), torch.randn(4, 1, 8, 8)
    batchnorm = model.features[0][1]
    with torch.no_grad():
        batchnorm.weight[:3] = 0
        batchnorm.bias[:3] = 0
    graph = trace_channels(model, x)
    dropped = {graph.root(n) for n in graph.calls["features.0.0"].outputs[:3]}
    pruned = prune_channels(copy.deepcopy(model), graph, dropped)
    assert pruned.features[0][0].out_channels == 5 and pruned.features[1][0].in_channels == 5
    torch.testing.assert_close(pruned(x), model(x))


def test_flops_loss_follows_the_paper() -> None:
    assert float(flops_loss(torch.tensor(150.0), 100.0, 200.0)) == pytest.approx(0.5)
    assert float(flops_loss(torch.tensor(50.0), 100.0, 200.0)) == pytest.approx(0.5)
    assert float(flops_loss(torch.tensor(100.0), 100.0, 200.0)) == pytest.approx(0.0)


@pytest.mark.parametrize("network", [SmallResNet, SmallVGG])
def test_autobot_hits_the_target_within_two_percent_and_runs(network: type[nn.Module]) -> None:
    torch.manual_seed(0)
    model = network(widths=(8, 16, 16), num_classes=4)
    images, labels = _data()
    before = copy.deepcopy(model.state_dict())
    full = _macs(model, images)
    result = autobot(
        model, 0.5 * full, (images, labels), AutoBotSettings(gate_steps=15, finetune_steps=5, batch_size=32)
    )
    assert abs(result.macs_after / (0.5 * full) - 1) <= 0.02
    assert _macs(result.model, images) == result.macs_after  # measured on the smaller network itself
    assert result.params_after < result.params_before and result.model(images[:2]).shape == (2, 4)
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())  # input untouched


def test_autobot_prunes_a_bundled_cnn_backbone() -> None:
    from fastvision.backbones import create_backbone

    torch.manual_seed(0)
    model = create_backbone("parameternet_600m", num_classes=4)
    images, labels = _data(count=8, size=32, channels=3)
    full = _macs(model, images)
    result = autobot(model, 0.6 * full, (images, labels), AutoBotSettings(gate_steps=2, finetune_steps=1, batch_size=4))
    assert abs(result.macs_after / (0.6 * full) - 1) <= 0.02
    assert result.model.eval()(images[:2]).shape == (2, 4)


def test_ftwt_per_sample_macs_fall_below_the_baseline() -> None:
    torch.manual_seed(0)
    model = SmallVGG(widths=(8, 16), num_classes=4)
    images, labels = _data()
    masked = ftwt(model, 0.7, (images, labels), FTWTSettings(steps=30, batch_size=32))
    per_sample = masked.macs_per_sample(images)
    assert per_sample.shape == (len(images),)
    assert (per_sample < _macs(model, images)).all()
    assert masked(images[:2]).shape == (2, 4) and len(masked.layers) == 4


def test_mass_target_keeps_the_strongest_filters_up_to_the_threshold() -> None:
    output = torch.zeros(1, 4, 2, 2)
    output[0, :, 0, 0] = torch.tensor([0.1, 0.5, 0.3, 0.1])
    assert mass_target(output, 0.7).tolist() == [[0.0, 1.0, 1.0, 0.0]]  # 0.5, then 0.3 reaches 0.8 >= 0.7
    assert mass_target(output, 1.0).tolist() == [[1.0, 1.0, 1.0, 1.0]]


def test_bad_input_is_refused_and_the_model_is_untouched() -> None:
    model = SmallVGG(widths=(8, 16), num_classes=4)
    before = copy.deepcopy(model.state_dict())
    images, labels = _data()
    full = _macs(model, images)
    with pytest.raises(ValueError, match="target_macs must be in"):
        autobot(model, 0, (images, labels))
    with pytest.raises(ValueError, match="target_macs must be in"):
        autobot(model, full, (images, labels))
    with pytest.raises(ValueError, match=r"data of shape \(96, 3, 8, 8\) does not fit"):
        autobot(model, full / 2, (images.repeat(1, 3, 1, 1), labels))
    with pytest.raises(ValueError, match="labels must be a 1-D integer tensor"):
        autobot(model, full / 2, (images, labels.float()))
    with pytest.raises(ValueError, match="threshold is a share"):
        ftwt(model, 1.5, (images, labels))

    class NoConv(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(64, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(x.flatten(1))

    with pytest.raises(ValueError, match="no prunable convolution channels"):
        autobot(NoConv(), 100, (images, labels))
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


def test_pruning_study_smoke(tmp_path) -> None:
    from evals.experiments.pruning.__main__ import main

    assert main(["--quick", "--threads", "1", "--quiet", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    methods = [row["method"] for row in results["settings"]]
    assert methods == ["unpatched", "autobot", "ftwt"]
    assert all(0 <= row["accuracy"] <= 1 for row in results["settings"])
    autobot_row = results["settings"][1]
    assert abs(autobot_row["relative_flops"] - 0.5) <= 0.01
    assert (tmp_path / "prune.png").stat().st_size > 0
