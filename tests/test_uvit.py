"""U-ViT and intermediate-fusion attention: exactness, the text's path through the blocks, FLOPs against the
published table (arXiv 2209.12152) and the refusals."""

from __future__ import annotations

import pytest
import torch

import fastvision
from fastvision.flops.uvit import uvit_cost
from fastvision.testing import tiny_llava
from fastvision.uvit import UViT, UViTConfig, uvit_preset

TINY = UViTConfig(image_size=8, patch_size=2, in_chans=3, embed_dim=32, depth=4, num_heads=4, text_dim=16,
                  text_tokens=5)  # fmt: skip


@pytest.fixture
def model_and_inputs() -> tuple[UViT, tuple[torch.Tensor, ...]]:
    torch.manual_seed(0)
    model = UViT(TINY).eval()
    inputs = (torch.randn(2, 3, 8, 8), torch.tensor([3.0, 500.0]), torch.randn(2, 5, 16))
    return model, inputs


def test_preset_has_the_published_parameter_count() -> None:
    assert uvit_cost(uvit_preset("uvit-s2-coco"))["parameters"] == 44_692_644  # 44.69M, arXiv 2209.12152


@pytest.mark.parametrize(
    ("fusion", "parameters_m", "gflops"),
    [
        (None, 44.69, 32.5),
        ({"v": 3, "c": 3, "conditioning": "concat"}, 54.15, 30.24),
        ({"v": 0, "c": 0, "conditioning": "cross"}, 44.69, 26.04),
        ({"v": 4, "c": 1, "conditioning": "cross"}, 47.84, 25.57),
        ({"v": 6, "c": 0, "conditioning": "concat"}, 44.69, 25.04),
    ],
)
def test_flops_and_parameters_match_the_published_table(fusion, parameters_m, gflops) -> None:
    cost = uvit_cost(uvit_preset("uvit-s2-coco"), None if fusion is None else {"fusion": "intermediate", **fusion})
    assert cost["parameters"] / 1e6 == pytest.approx(parameters_m, abs=0.006)
    assert cost["flops"] / 1e9 == pytest.approx(gflops, rel=0.01)


def test_v0_c0_concat_is_bit_identical_and_unpatch_is_exact(model_and_inputs) -> None:
    model, inputs = model_and_inputs
    reference = model(*inputs)
    names = set(model.state_dict())
    with torch.no_grad():
        fastvision.patch(model, fusion="intermediate", v=0, c=0, conditioning="concat")
        assert torch.equal(model(*inputs), reference)
        fastvision.unpatch(model)
        for options in ({"v": 1, "c": 2, "conditioning": "concat"}, {"v": 2, "c": 1, "conditioning": "cross"}):
            fastvision.patch(model, fusion="intermediate", **options)
            assert not torch.equal(model(*inputs), reference)
            assert len(model.fusion_text_blocks) == options["c"]
            fastvision.unpatch(model)
            assert torch.equal(model(*inputs), reference)
    assert set(model.state_dict()) == names and not fastvision.is_patched(model) and "forward" not in vars(model)


@pytest.mark.parametrize("conditioning", ["concat", "cross"])
def test_the_first_and_last_v_blocks_see_no_text(model_and_inputs, conditioning: str) -> None:
    model, inputs = model_and_inputs
    seen: list[int] = []
    blocks = [*model.in_blocks, model.mid_block, *model.out_blocks]
    hooks = [block.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1])) for block in blocks]
    fastvision.patch(model, fusion="intermediate", v=1, c=1, conditioning=conditioning)
    with torch.no_grad():
        model(*inputs)
    for hook in hooks:
        hook.remove()
    image_only, joint = 1 + TINY.num_patches, 1 + TINY.text_tokens + TINY.num_patches
    if conditioning == "concat":
        assert seen == [image_only, joint, joint, joint, image_only]
    else:  # cross-attention blocks are run by the patch, not through Block.forward: only the image-only ones show
        assert seen == [image_only, image_only]


@pytest.mark.parametrize("conditioning", ["concat", "cross"])
def test_the_text_still_conditions_the_output(model_and_inputs, conditioning: str) -> None:
    model, (x, timesteps, context) = model_and_inputs
    fastvision.patch(model, fusion="intermediate", v=2, c=1, conditioning=conditioning)  # only the mid block joins
    with torch.no_grad():
        assert not torch.allclose(model(x, timesteps, context), model(x, timesteps, torch.randn_like(context)))


def test_training_step_reaches_the_new_text_blocks(model_and_inputs) -> None:
    model, inputs = model_and_inputs
    fastvision.patch(model, fusion="intermediate", v=1, c=1, conditioning="cross")
    model.train()
    model(*inputs).square().mean().backward()
    assert all(p.grad is not None for p in model.fusion_text_blocks.parameters())


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"fusion": "intermediate", "v": 3}, ValueError, "v=3 is out of range .* 0 <= v <= 2"),
        ({"fusion": "intermediate", "c": 6}, ValueError, "c=6 is out of range"),
        ({"fusion": "intermediate", "v": -1}, ValueError, "v=-1 must be an integer >= 0"),
        ({"fusion": "intermediate", "conditioning": "add"}, ValueError, "conditioning='add' is unknown"),
        ({"fusion": "late"}, ValueError, "fusion='late' is not supported"),
        ({"fusion": "intermediate", "k": 2}, TypeError, "FastV options \\['k'\\] do not apply"),
    ],
)
def test_bad_fusion_arguments_leave_the_model_untouched(model_and_inputs, options, error, message) -> None:
    model, inputs = model_and_inputs
    reference, state = model(*inputs), {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=message):
        fastvision.patch(model, **options)
    assert not fastvision.is_patched(model) and "forward" not in vars(model)
    assert torch.equal(model(*inputs), reference)
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[name], state[name]) for name in state)


def test_fusion_refuses_a_model_that_is_not_a_uvit_and_a_second_patch(model_and_inputs) -> None:
    with pytest.raises(TypeError, match=r"UViT and diffusers UTransformer2DModel models, got LlavaForConditional"):
        fastvision.patch(tiny_llava(), fusion="intermediate", v=1)
    model, _ = model_and_inputs
    fastvision.patch(model, fusion="intermediate", v=1)
    with pytest.raises(RuntimeError, match="already patched"):
        fastvision.patch(model, fusion="intermediate", v=0)
    assert fastvision.patch_config(model).v == 1
    with pytest.raises(ValueError, match="not FastV"):
        fastvision.kept_tokens(model)


def test_flops_command_prints_the_fusion_row(capsys) -> None:
    from fastvision.cli.main import main

    args = ["flops", "uvit-s2-coco", "--fusion", "intermediate", "--v", "4", "--c", "1", "--conditioning", "cross"]
    assert main([*args, "--json"]) == 0
    import json

    result = json.loads(capsys.readouterr().out)
    assert result["fusion"]["flops_ratio"] == pytest.approx(25.57 / 32.5, rel=0.01)
    assert main(["flops", "uvit-s2-coco", "--v", "7"]) == 2
    assert "v=7 is out of range" in capsys.readouterr().err


def test_ddim_sampler_shapes_and_guidance_arguments(model_and_inputs) -> None:
    from fastvision.uvit.diffusion import NoiseSchedule, ddim_sample

    model, (_, _, context) = model_and_inputs
    schedule = NoiseSchedule.stable_diffusion()
    assert schedule.steps == 1000 and float(schedule.alphas_cumprod[-1]) == pytest.approx(0.00466, abs=1e-4)
    generator = torch.Generator().manual_seed(0)
    samples = ddim_sample(model, context, (2, 3, 8, 8), schedule, steps=5, generator=generator)
    assert samples.shape == (2, 3, 8, 8) and torch.isfinite(samples).all()
    null = torch.zeros_like(context)
    guided = ddim_sample(model, context, (2, 3, 8, 8), schedule, steps=5, guidance=3.0, null_context=null,
                         generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert guided.shape == samples.shape and not torch.equal(guided, samples)
    clipped = ddim_sample(model, context, (2, 3, 8, 8), schedule, steps=5, clip_denoised=True,
                          generator=torch.Generator().manual_seed(0))  # fmt: skip
    assert float(clipped.abs().max()) <= 1.0  # the last step returns the clamped estimate of x_0
    with pytest.raises(ValueError, match="null_context"):
        ddim_sample(model, context, (2, 3, 8, 8), schedule, steps=5, guidance=2.0)
    with pytest.raises(ValueError, match="steps=0 is out of range"):
        ddim_sample(model, context, (2, 3, 8, 8), schedule, steps=0)


@pytest.mark.parametrize("fusion", [None, {"fusion": "intermediate", "v": 1, "c": 1, "conditioning": "cross"}])
def test_tiny_training_lowers_the_diffusion_loss(fusion) -> None:
    from fastvision.uvit.diffusion import NoiseSchedule, diffusion_loss

    torch.manual_seed(0)
    model = UViT(TINY)
    if fusion is not None:
        fastvision.patch(model, **fusion)
    images = torch.rand(4, 3, 8, 8) * 2 - 1
    context = torch.randn(4, 5, 16)
    schedule = NoiseSchedule.stable_diffusion()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def evaluate() -> float:
        with torch.no_grad():
            generator = torch.Generator().manual_seed(1)
            return sum(diffusion_loss(model, images, context, schedule, generator).item() for _ in range(8)) / 8

    before = evaluate()
    generator = torch.Generator().manual_seed(0)
    for _ in range(60):
        loss = diffusion_loss(model, images, context, schedule, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert evaluate() < 0.7 * before


def test_loss_weightings_follow_their_definitions() -> None:
    from fastvision.uvit.diffusion import NoiseSchedule, loss_weights

    schedule = NoiseSchedule.stable_diffusion()
    timesteps = torch.tensor([0, 100, 500, 999])
    alpha = schedule.alphas_cumprod[timesteps]
    snr = alpha / (1 - alpha)
    assert torch.equal(loss_weights(schedule, timesteps, None, None), torch.ones(4, dtype=torch.float64))
    min_snr = loss_weights(schedule, timesteps, 5.0, None)
    assert torch.allclose(min_snr, torch.minimum(snr, torch.tensor(5.0)) / snr)
    assert min_snr[0] < 0.01 and min_snr[-1] == 1.0  # the easy low-noise steps are the ones turned down
    capped = loss_weights(schedule, timesteps, None, 20.0)
    assert torch.allclose(capped, torch.minimum(1 / snr, torch.tensor(20.0)))
    assert capped[-1] == 20.0 and capped[0] < 0.01
    floored = loss_weights(schedule, timesteps, None, 20.0, 1.0)
    assert torch.allclose(floored, (1 / snr).clamp(1.0, 20.0))
    assert floored[0] == 1.0 and floored[1] == 1.0 and floored[-1] == 20.0  # low noise: plain ε loss again


def test_sincos_start_of_the_positional_embedding() -> None:
    """The patch rows of the learned embedding start as DiT's 2-D sin-cos table; the extra tokens' rows stay random."""
    import dataclasses

    from fastvision.uvit.model import sincos_grid_embedding

    table = sincos_grid_embedding(32, side=4)
    origin = torch.tensor([0.0] * 8 + [1.0] * 8 + [0.0] * 8 + [1.0] * 8)  # sin 0 and cos 0, for the row and the column
    assert table.shape == (16, 32) and torch.equal(table[0], origin)
    assert torch.allclose(table[1, 16:24], torch.sin(1.0 / 10000 ** (torch.arange(8) / 8)))  # column 1, sin half
    assert torch.equal(table[4, :16], table[1, 16:])  # row 1, column 0 encodes the row as (1, 0) encodes the column
    model = UViT(dataclasses.replace(TINY, pos_embed_init="sincos"))
    assert model.pos_embed.requires_grad and torch.equal(model.pos_embed[0, model.extras :], table)
    assert float(model.pos_embed[0, : model.extras].detach().std()) < 0.05  # U-ViT's truncated normal, std 0.02
    with pytest.raises(ValueError, match="pos_embed_init='grid' is unknown; allowed: random, sincos"):
        dataclasses.replace(TINY, pos_embed_init="grid")
    with pytest.raises(ValueError, match="divisible by 4, got 30"):
        UViTConfig(embed_dim=30, num_heads=2, pos_embed_init="sincos")
