"""Config-type dispatch: the config's type picks the method, keywords are sugar, and one undo log serves all."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

import fastvision
import fastvision.patches.fusion.uvit as uvit_patch
from fastvision import FastVConfig, FusionConfig
from fastvision.dart.config import DARTConfig
from fastvision.divprune.config import DivPruneConfig
from fastvision.handle import set_attribute
from fastvision.methods import _METHODS, Method, register_method, registered_methods
from fastvision.testing import llava_prompt, tiny_llava
from fastvision.uvit import UViT, UViTConfig
from fastvision.visionzip.config import VisionZipConfig

TINY_UVIT = UViTConfig(image_size=8, patch_size=2, in_chans=3, embed_dim=32, depth=4, num_heads=4, text_dim=16,
                       text_tokens=5)  # fmt: skip


@pytest.fixture
def uvit_and_inputs() -> tuple[UViT, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    inputs = (torch.randn(2, 3, 8, 8), torch.tensor([3.0, 500.0]), torch.randn(2, 5, 16))
    return UViT(TINY_UVIT).eval(), inputs


@pytest.fixture(scope="module")
def llava_and_inputs() -> tuple[nn.Module, dict[str, torch.Tensor]]:
    model = tiny_llava("llama")
    ids = torch.tensor([llava_prompt(model, [5, 6], [7, 8])])
    return model, {"input_ids": ids, "pixel_values": torch.randn(1, 3, 32, 32)}


def test_the_builtin_methods_are_selected_by_config_type() -> None:
    builtin = [FastVConfig, DARTConfig, DivPruneConfig, VisionZipConfig, FusionConfig]
    assert [method.config_type for method in registered_methods()][:5] == builtin


def test_a_config_object_and_its_keyword_form_patch_the_same(llava_and_inputs, uvit_and_inputs) -> None:
    model, inputs = llava_and_inputs
    with torch.no_grad(), fastvision.patched(model, FastVConfig(k=2, ratio=0.5)):
        by_config = model(**inputs).logits
    with torch.no_grad(), fastvision.patched(model, k=2, ratio=0.5):
        assert torch.equal(model(**inputs).logits, by_config)
    uvit, uvit_inputs = uvit_and_inputs
    torch.manual_seed(1)  # the new text blocks are initialised from the global RNG
    with torch.no_grad(), fastvision.patched(uvit, FusionConfig(v=1, c=1, conditioning="cross")):
        by_config = uvit(*uvit_inputs)
        assert fastvision.patch_config(uvit) == FusionConfig(v=1, c=1, conditioning="cross")
    torch.manual_seed(1)
    with torch.no_grad(), fastvision.patched(uvit, fusion="intermediate", v=1, c=1, conditioning="cross"):
        assert torch.equal(uvit(*uvit_inputs), by_config)


@pytest.mark.parametrize(
    ("config", "options", "message"),
    [
        (
            {"k": 2},
            {},
            r"takes a method config \(FastVConfig, DARTConfig, DivPruneConfig, VisionZipConfig, FusionConfig.*"
            r"FastVConfig\.from_dict\(d\)",
        ),
        (0.5, {}, r"takes a method config .* got 0\.5"),
        (None, {"kk": 2}, r"Unknown options \['kk'\] do not apply to FastV \(k, ratio"),
        (None, {"k": 2, "v": 1}, r"intermediate fusion options \['v'\] do not apply to FastV"),
        (FastVConfig(), {"v": 1}, r"either a config object or keywords \['v'\], not both"),
    ],
)
def test_a_config_the_dispatch_cannot_place_is_refused(llava_and_inputs, config, options, message) -> None:
    model, inputs = llava_and_inputs
    with torch.no_grad():
        before = model(**inputs).logits
    with pytest.raises(TypeError, match=message):
        fastvision.patch(model, config, **options)
    assert not fastvision.is_patched(model)
    with torch.no_grad():
        assert torch.equal(model(**inputs).logits, before)


def test_fusion_keywords_on_a_uvit_refuse_fastv_options(uvit_and_inputs) -> None:
    uvit, _ = uvit_and_inputs
    with pytest.raises(TypeError, match=r"FastV options \['ratio'\] do not apply to intermediate fusion"):
        fastvision.patch(uvit, ratio=0.5)
    assert not fastvision.is_patched(uvit)


def test_a_fusion_install_that_fails_halfway_is_rolled_back_by_the_shared_path(uvit_and_inputs, monkeypatch) -> None:
    uvit, inputs = uvit_and_inputs
    with torch.no_grad():
        before = uvit(*inputs)
    calls = []

    def failing_set_attribute(handle, obj, name, value):
        calls.append(name)
        set_attribute(handle, obj, name, value)
        if name == "forward":  # the text blocks and the new forward are in: fail after both
            raise RuntimeError("injected failure")

    monkeypatch.setattr(uvit_patch, "set_attribute", failing_set_attribute)
    with pytest.raises(RuntimeError, match="injected failure"):
        fastvision.patch(uvit, FusionConfig(v=1, c=2))
    assert calls == [uvit_patch.TEXT_BLOCKS_ATTRIBUTE, "forward"]
    assert not fastvision.is_patched(uvit)
    assert "forward" not in vars(uvit) and uvit_patch.TEXT_BLOCKS_ATTRIBUTE not in vars(uvit)
    with torch.no_grad():
        assert torch.equal(uvit(*inputs), before)


@dataclass(frozen=True)
class ScaleConfig:
    """A toy third-party method: multiply a linear layer's output by ``factor``."""

    factor: float = 2.0


def test_a_registered_method_gets_dispatch_undo_and_the_keyword_form() -> None:
    def install(model, config, handle):
        hook = model.register_forward_hook(lambda module, args, output: output * config.factor)
        handle.record("remove scale hook", hook.remove)

    method = Method(name="scale", config_type=ScaleConfig, keywords=("factor",),
                    from_keywords=lambda options: ScaleConfig(**options), check=lambda model, config: "linear",
                    install=install)  # fmt: skip
    register_method(method)
    try:
        with pytest.raises(ValueError, match="already selects the method 'scale'"):
            register_method(method)
        layer, x = nn.Linear(3, 3), torch.randn(2, 3)
        before = layer(x)
        fastvision.patch(layer, ScaleConfig(3.0))
        assert torch.equal(layer(x), before * 3.0)
        assert fastvision.patch_config(layer) == ScaleConfig(3.0)
        fastvision.unpatch(layer)
        assert torch.equal(layer(x), before)
        with fastvision.patched(layer, factor=0.5):
            assert torch.equal(layer(x), before * 0.5)
        assert not fastvision.is_patched(layer)
    finally:
        del _METHODS[ScaleConfig]
