"""Intermediate fusion on diffusers' U-ViT (``UTransformer2DModel``, tiny configs): exactness, where the text goes,
FLOPs, the refusals and a training smoke test. CI sets FASTVISION_REQUIRE_DIFFUSERS=1, so a missing install fails."""

from __future__ import annotations

import os

import pytest
import torch

import fastvision

TEXT_START, TEXT_TOKENS, AFTER = 2, 5, 1 + 16  # [t_img, t_text, text (5), clip_img, 4x4 patches], as UniDiffuser
SPAN = {"text_start": TEXT_START, "text_tokens": TEXT_TOKENS}
LENGTH = TEXT_START + TEXT_TOKENS + AFTER


def _utransformer_class():
    try:
        from diffusers.pipelines.deprecated.unidiffuser.modeling_uvit import UTransformer2DModel
    except ModuleNotFoundError as error:
        if os.environ.get("FASTVISION_REQUIRE_DIFFUSERS") == "1":
            raise
        pytest.skip(f"diffusers is not installed ({error}): pip install fastvision[diffusers]")
    return UTransformer2DModel


def tiny_utransformer(**overrides):
    """A 4-layer (2 in, mid, 2 out) UniDiffuser U-ViT of width 16, as diffusers' own fast tests build it."""
    settings = dict(num_attention_heads=2, attention_head_dim=8, in_channels=4, out_channels=4, num_layers=4,
                    sample_size=8, patch_size=2, activation_fn="gelu", num_embeds_ada_norm=1000,
                    norm_type="layer_norm", block_type="unidiffuser", ff_final_dropout=True)  # fmt: skip
    torch.manual_seed(0)
    return _utransformer_class()(**{**settings, **overrides}).eval()


def run(model, hidden_states: torch.Tensor) -> torch.Tensor:
    return model(hidden_states, return_dict=False, hidden_states_is_embedding=True, unpatchify=False)[0]


@pytest.fixture
def sequence() -> torch.Tensor:
    return torch.randn(2, LENGTH, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(
    "shape",
    [
        {},
        {"pre_layer_norm": True},
        {"block_type": "transformer"},
        {"block_type": "transformer", "pre_layer_norm": True},
    ],
)
def test_v0_c0_concat_is_bit_identical_and_unpatch_is_exact(shape, sequence) -> None:
    model = tiny_utransformer(**shape)
    with torch.no_grad():
        reference = run(model, sequence)
        fastvision.patch(model, fusion="intermediate", v=0, c=0, conditioning="concat", **SPAN)
        assert torch.equal(run(model, sequence), reference)
        fastvision.unpatch(model)
        processors = [block.attn1.processor for block in model.modules() if hasattr(block, "attn1")]
        for options in ({"v": 1, "c": 2, "conditioning": "concat"}, {"v": 2, "c": 1, "conditioning": "cross"}):
            fastvision.patch(model, fusion="intermediate", **options, **SPAN)
            changed = run(model, sequence)
            assert changed.shape == reference.shape and not torch.allclose(changed, reference)
            assert len(model.fusion_text_blocks) == options["c"]
            fastvision.unpatch(model)
            assert torch.equal(run(model, sequence), reference)
            assert not hasattr(model, "fusion_text_blocks") and "forward" not in vars(model)
            assert processors == [block.attn1.processor for block in model.modules() if hasattr(block, "attn1")]


@pytest.mark.parametrize("shape", [{}, {"pre_layer_norm": True}, {"block_type": "transformer"}])
@pytest.mark.parametrize("v", [0, 1])
def test_cross_equals_each_block_run_on_tokens_and_text_keeping_the_token_rows(shape, v, sequence) -> None:
    """An independent reference for conditioning="cross": a stock block run on [tokens, text] gives its token rows
    exactly the queries of the tokens over keys and values of both (and the text rows are thrown away)."""
    model = tiny_utransformer(**shape)
    text = sequence[:, TEXT_START : TEXT_START + TEXT_TOKENS]
    tokens = torch.cat([sequence[:, :TEXT_START], sequence[:, TEXT_START + TEXT_TOKENS :]], dim=1)
    blocks = [*model.transformer_in_blocks, model.transformer_mid_block]
    blocks += [out["block"] for out in model.transformer_out_blocks]
    half, skips = len(model.transformer_in_blocks), []
    with torch.no_grad():
        for index, block in enumerate(blocks):
            if index > half:
                tokens = model.transformer_out_blocks[index - half - 1]["skip"](tokens, skips.pop())
            if v <= index < len(blocks) - v:
                tokens = block(torch.cat([tokens, text], dim=1))[:, : tokens.shape[1]]
            else:
                tokens = block(tokens)
            if index < half:
                skips.append(tokens)
        expected = model.norm_out(torch.cat([tokens[:, :TEXT_START], text, tokens[:, TEXT_START:]], dim=1))
        fastvision.patch(model, fusion="intermediate", v=v, c=0, conditioning="cross", **SPAN)
        torch.testing.assert_close(run(model, sequence), expected, rtol=1e-5, atol=1e-6)


def test_cross_passes_the_callers_attention_arguments_through() -> None:
    """diffusers hands a processor only the keyword arguments its __call__ names; the wrapper must not hide them."""
    model = tiny_utransformer()
    seen: list[float] = []

    class ScaleRecorder:
        def __init__(self, processor):
            self.processor = processor

        def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, scale=1.0):
            seen.append(scale)
            return self.processor(attn, hidden_states, encoder_hidden_states, attention_mask)

    for block in model.modules():
        if hasattr(block, "attn1"):
            block.attn1.processor = ScaleRecorder(block.attn1.processor)
    fastvision.patch(model, fusion="intermediate", v=1, c=0, conditioning="cross", **SPAN)
    with torch.no_grad():
        model(torch.randn(1, LENGTH, 16), cross_attention_kwargs={"scale": 0.5}, return_dict=False,
              hidden_states_is_embedding=True, unpatchify=False)  # fmt: skip
    assert seen == [0.5, 0.5, 1.0, 0.5, 0.5]  # as unpatched: diffusers runs the mid-block without the arguments


def test_new_text_blocks_follow_the_models_mode(sequence) -> None:
    model = tiny_utransformer(dropout=0.5)  # eval(): dropout must be off in the new blocks too
    fastvision.patch(model, fusion="intermediate", v=1, c=2, conditioning="concat", **SPAN)
    assert not any(module.training for module in model.fusion_text_blocks.modules())
    with torch.no_grad():
        assert torch.equal(run(model, sequence), run(model, sequence))


def test_text_at_the_end_of_the_sequence(sequence) -> None:
    model = tiny_utransformer()
    fastvision.patch(model, fusion="intermediate", v=1, c=1, conditioning="concat", text_start=LENGTH - 5,
                     text_tokens=5)  # fmt: skip
    with torch.no_grad():
        assert run(model, sequence).shape == sequence.shape
    with pytest.raises(ValueError, match=r"text at positions \[19, 24\).*shape \(2, 20, 16\)"):
        run(model, sequence[:, :20])


def _record_what_each_block_sees(model) -> list[tuple[int, int | None]]:
    """Per block call: (tokens it updates, keys its self-attention sees)."""
    seen: list[tuple[int, int | None]] = []
    blocks = [*model.transformer_in_blocks, model.transformer_mid_block]
    blocks += [out["block"] for out in model.transformer_out_blocks]
    for block in blocks:

        def hook(module, args, kwargs, output):
            text = getattr(module.attn1.processor, "text", None)  # set around the block's call in cross mode
            tokens = args[0].shape[1]
            seen.append((tokens, tokens + (0 if text is None else text.shape[1])))

        block.register_forward_hook(hook, with_kwargs=True)
    return seen


@pytest.mark.parametrize("conditioning", ["concat", "cross"])
def test_the_first_and_last_v_blocks_see_no_text(conditioning: str, sequence) -> None:
    model = tiny_utransformer()
    fastvision.patch(model, fusion="intermediate", v=1, c=1, conditioning=conditioning, **SPAN)
    seen = _record_what_each_block_sees(model)
    with torch.no_grad():
        run(model, sequence)
    without, full = LENGTH - TEXT_TOKENS, LENGTH
    middle = (full, full) if conditioning == "concat" else (without, full)  # cross: the text is keys and values only
    assert seen == [(without, without), middle, middle, middle, (without, without)]


@pytest.mark.parametrize("conditioning", ["concat", "cross"])
def test_the_text_still_conditions_the_image_positions(conditioning: str, sequence) -> None:
    model = tiny_utransformer()
    fastvision.patch(model, fusion="intermediate", v=2, c=1, conditioning=conditioning, **SPAN)  # only the mid-block
    other = sequence.clone()
    other[:, TEXT_START : TEXT_START + TEXT_TOKENS] = torch.randn(2, TEXT_TOKENS, 16)
    image = slice(TEXT_START + TEXT_TOKENS, LENGTH)
    with torch.no_grad():
        assert not torch.allclose(run(model, sequence)[:, image], run(model, other)[:, image])
        other = sequence.clone()
        other[:, image] += 1.0  # and the text positions of the output do not see the image after the text left
        before, after = run(model, sequence), run(model, other)
    text = slice(TEXT_START, TEXT_START + TEXT_TOKENS)
    assert not torch.allclose(before[:, image], after[:, image])
    if conditioning == "cross":
        assert torch.equal(before[:, text], after[:, text])


def test_unpatchified_output_is_exact_and_a_plain_latent_input_is_refused() -> None:
    model = tiny_utransformer()  # width 16 = 2 x 2 patches x 4 channels, so diffusers' unpatchify is defined
    embedded = torch.randn(1, 9 + 16, 16)  # 25 tokens: unpatchified as a 5x5 grid of 2x2 patches
    with torch.no_grad():
        reference = model(embedded, hidden_states_is_embedding=True).sample
        fastvision.patch(model, fusion="intermediate", v=0, c=0, conditioning="concat", text_start=0, text_tokens=9)
        output = model(embedded, hidden_states_is_embedding=True)
    assert reference.shape == (1, 4, 10, 10) and torch.equal(output.sample, reference)
    with pytest.raises(ValueError, match=r"text at positions \[0, 9\).*hidden_states_is_embedding=False"):
        model(torch.randn(1, 4, 8, 8))


def test_training_step_reaches_the_new_text_blocks_and_lowers_a_denoising_loss() -> None:
    """A short smoke test: predict the noise of 4x4 latent patches from the noisy patches and a per-image text."""
    model = tiny_utransformer().train()
    fastvision.patch(model, fusion="intermediate", v=1, c=1, conditioning="cross", **SPAN)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(4, 16, 16, generator=generator)
    text = torch.randn(4, TEXT_TOKENS, 16, generator=generator)
    prefix = torch.zeros(4, TEXT_START, 16)
    clip_image = torch.zeros(4, 1, 16)
    head = torch.nn.Linear(16, 16)
    optimizer = torch.optim.AdamW([*model.parameters(), *head.parameters()], lr=3e-3)

    def loss_at(seed: int) -> torch.Tensor:
        noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
        noisy = 0.6 * latents + 0.8 * noise
        output = run(model, torch.cat([prefix, text, clip_image, noisy], dim=1))
        return torch.nn.functional.mse_loss(head(output[:, -16:]), noise)

    with torch.no_grad():
        before = sum(loss_at(1000 + seed).item() for seed in range(4)) / 4
    for step in range(60):
        loss = loss_at(step)
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.fusion_text_blocks.parameters())
        optimizer.step()
    with torch.no_grad():
        after = sum(loss_at(1000 + seed).item() for seed in range(4)) / 4
    assert after < 0.7 * before


def test_flops_are_measured_and_follow_the_text_path() -> None:
    from fastvision.flops.counter import measure_flops

    def flops(fusion: dict | None) -> int:
        model = tiny_utransformer()
        if fusion is not None:
            fastvision.patch(model, fusion="intermediate", **fusion, **SPAN)
        report, _ = measure_flops(lambda: run(model, torch.zeros(1, LENGTH, 16)))
        return report.total

    def one_block(tokens: int) -> int:
        block = tiny_utransformer().transformer_mid_block
        return measure_flops(lambda: block(torch.zeros(1, tokens, 16)))[0].total

    early = flops(None)
    assert flops({"v": 0, "c": 0, "conditioning": "concat"}) == early
    assert flops({"v": 0, "c": 1, "conditioning": "concat"}) == early + one_block(TEXT_TOKENS)
    # v=1: the first and last blocks, and the last block's skip merge (a 2*16 -> 16 linear), run without the text
    saved = 2 * (one_block(LENGTH) - one_block(LENGTH - TEXT_TOKENS)) + 2 * TEXT_TOKENS * (2 * 16) * 16
    assert flops({"v": 1, "c": 0, "conditioning": "concat"}) == early - saved
    assert flops({"v": 0, "c": 0, "conditioning": "cross"}) < early


def test_flops_command_prints_the_unidiffuser_row(capsys) -> None:
    _utransformer_class()
    import json

    from fastvision.cli.main import main

    args = ["flops", "unidiffuser-v1", "--fusion", "intermediate", "--v", "4", "--c", "1", "--conditioning", "cross"]
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert 940e6 < result["early_fusion"]["parameters"] < 960e6  # UniDiffuser's U-ViT: 952M with its heads
    assert result["fusion"]["parameters"] > result["early_fusion"]["parameters"]  # one new text block
    assert 0.5 < result["fusion"]["flops_ratio"] < 1.0


@pytest.mark.parametrize(
    ("overrides", "options", "error", "message"),
    [
        ({}, {"v": 1}, ValueError, "pass text_start and text_tokens"),
        ({}, {"v": 3, **SPAN}, ValueError, r"v=3 is out of range .* 0 <= v <= 2"),
        ({}, {"c": 6, **SPAN}, ValueError, "c=6 is out of range"),
        ({}, {"v": 1, "text_start": 2}, ValueError, "give both"),
        ({}, {"v": 1, "text_start": 2, "text_tokens": 0}, ValueError, "text_tokens=0 must be None or an integer >= 1"),
        ({"cross_attention_dim": 16}, {"v": 1, **SPAN}, ValueError, "conditions by cross-attention"),
        ({"norm_type": "ada_norm"}, {"v": 1, **SPAN}, ValueError, "AdaLayerNorm"),
    ],
)
def test_bad_input_is_refused_and_the_model_is_untouched(overrides, options, error, message, sequence) -> None:
    model = tiny_utransformer(**overrides)
    if "cross_attention_dim" in overrides or "norm_type" in overrides:
        reference = None
    else:
        with torch.no_grad():
            reference = run(model, sequence)
    state = {name: value.clone() for name, value in model.state_dict().items()}
    processors = [block.attn1.processor for block in model.modules() if hasattr(block, "attn1")]
    with pytest.raises(error, match=message):
        fastvision.patch(model, fusion="intermediate", **options)
    assert "forward" not in vars(model) and not hasattr(model, "fusion_text_blocks")
    assert processors == [block.attn1.processor for block in model.modules() if hasattr(block, "attn1")]
    assert all(torch.equal(value, state[name]) for name, value in model.state_dict().items())
    if reference is not None:
        with torch.no_grad():
            assert torch.equal(run(model, sequence), reference)


def test_a_diffusers_release_without_the_internals_fails_at_patch_time() -> None:
    model = tiny_utransformer()
    del model.transformer_mid_block.pre_layer_norm
    with pytest.raises(RuntimeError, match=r"lacks \['pre_layer_norm'\].*diffusers 0.42"):
        fastvision.patch(model, fusion="intermediate", v=1, **SPAN)
    assert "forward" not in vars(model)
    model = tiny_utransformer()
    model.transformer_mid_block.attn1.set_processor(torch.nn.Identity())  # a processor that is a module
    with pytest.raises(ValueError, match="Block 2's attn1 has a module as its processor"):
        fastvision.patch(model, fusion="intermediate", v=1, conditioning="cross", **SPAN)
    assert "forward" not in vars(model) and isinstance(model.transformer_mid_block.attn1.processor, torch.nn.Identity)


def test_text_span_is_refused_on_fastvisions_own_uvit() -> None:
    from fastvision.uvit import UViT, UViTConfig

    model = UViT(UViTConfig(image_size=8, patch_size=2, in_chans=3, embed_dim=32, depth=4, num_heads=4, text_dim=16,
                            text_tokens=5))  # fmt: skip
    with pytest.raises(ValueError, match="fastvision's U-ViT knows where its text is"):
        fastvision.patch(model, fusion="intermediate", v=1, **SPAN)
    assert "forward" not in vars(model)


def test_the_documented_call_on_a_unidiffuser_model() -> None:
    """UniDiffuser-v1's own forward, with its transformer patched as docs/fusion.md shows (a tiny config of
    diffusers' conversion script's test settings, with v1's data-type token)."""
    _utransformer_class()
    from diffusers import UniDiffuserModel

    torch.manual_seed(0)
    unet = UniDiffuserModel(text_dim=32, clip_img_dim=32, num_text_tokens=77, num_attention_heads=2,
                            attention_head_dim=8, in_channels=4, out_channels=4, num_layers=2, sample_size=16,
                            patch_size=2, activation_fn="gelu", num_embeds_ada_norm=1000, block_type="unidiffuser",
                            ff_final_dropout=True, use_data_type_embedding=True).eval()  # fmt: skip
    inputs = (torch.randn(1, 4, 16, 16), torch.randn(1, 1, 32), torch.randn(1, 77, 32), 500, 0)
    with torch.no_grad():
        reference = unet(*inputs, data_type=1)
        fastvision.patch(unet.transformer, fusion="intermediate", v=0, c=0, text_start=3, text_tokens=77)
        assert all(torch.equal(a, b) for a, b in zip(unet(*inputs, data_type=1), reference, strict=True))
        fastvision.unpatch(unet.transformer)
        fastvision.patch(unet.transformer, fusion="intermediate", v=1, c=1, conditioning="cross", text_start=3,
                         text_tokens=77)  # fmt: skip
        image, _, _ = unet(*inputs, data_type=1)
        other, _, _ = unet(*inputs[:2], torch.randn(1, 77, 32), *inputs[3:], data_type=1)
    assert image.shape == reference[0].shape and not torch.allclose(image, reference[0])
    assert not torch.allclose(other, image)  # the prompt still steers the image
