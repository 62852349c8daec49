"""Contract tests for the segmentation networks in meddistill.models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from meddistill.errors import MeddistillError
from meddistill.models import MODELS, ENet, ProbabilityEnsemble, pad_to_multiple
from meddistill.registry import check_arguments

# Small widths keep the tests fast; the parameter-count test uses the defaults.
SMALL = {
    "fanet": {"base_channels": 8},
    "mobilenetv2_unet": {"width_mult": 0.35},
    "enet": {},
}
TAPS = ("stage1", "stage2", "bottleneck", "decoder")


def build(name: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS.build(name, in_channels=3, out_channels=2, **{**SMALL[name], **kwargs})


def test_registry_names():
    assert {"enet", "fanet", "mobilenetv2_unet", "superretina", "retina-student"} <= set(MODELS.names())
    with pytest.raises(MeddistillError, match="did you mean 'enet'"):
        MODELS.get("enett")


def test_check_arguments_names_the_nearest_keyword():
    def factory(student, width: int = 1, *, depth: int = 2):
        return student, width, depth

    check_arguments("model 'x'", factory, {"width": 3, "depth": 1})
    check_arguments("model 'x'", lambda **anything: anything, {"whatever": 1})  # takes any keyword
    with pytest.raises(MeddistillError, match="^model 'x' has no argument 'widht' \\(did you mean 'width'\\?\\)$"):
        check_arguments("model 'x'", factory, {"depth": 1, "widht": 3})
    with pytest.raises(MeddistillError, match="^model 'x' has no argument 'colour'$"):
        check_arguments("model 'x'", factory, {"colour": 3})
    with pytest.raises(MeddistillError, match="has no argument 'student'"):  # the caller passes it
        check_arguments("model 'x'", factory, {"student": 3}, passed=1)


def test_pad_to_multiple_crops_back():
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).view(2, 3, 5, 7)
    padded, (rows, cols) = pad_to_multiple(x, 4)
    assert padded.shape == (2, 3, 8, 8)
    assert torch.equal(padded[..., rows, cols], x)
    same, (rows, cols) = pad_to_multiple(x, 1)
    assert same is x and (rows, cols) == (slice(0, 5), slice(0, 7))


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("shape", [(1, 3, 37, 45), (2, 3, 64, 64), (1, 3, 16, 16)])
def test_output_shape(name, shape):
    model = build(name).eval()
    with torch.no_grad():
        out = model(torch.randn(shape))
    assert out.shape == (shape[0], 2, *shape[2:])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_forward_is_crop_of_decode_encode(name):
    model = build(name).eval()
    torch.manual_seed(1)
    with torch.no_grad():
        x = torch.randn(1, 3, 64, 64)
        features = model.encode(x)
        assert torch.equal(model.decode(features), model(x))
        odd = torch.randn(1, 3, 37, 45)
        padded, (rows, cols) = pad_to_multiple(odd, model.stride)
        assert torch.equal(model.decode(model.encode(padded))[..., rows, cols], model(odd))
    assert all(f.dim() == 4 and f.is_floating_point() for f in features)
    assert features[-1].shape[-1] == 64 // model.stride


def calibrated(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """The model in eval mode with BatchNorm statistics taken from ``x``, as after training
    (fresh running statistics shrink the signal of deep stacks towards zero)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    with torch.no_grad():
        model(x)
    return model.eval()


@pytest.mark.parametrize("name", sorted(SMALL))
def test_decode_uses_only_the_given_features(name):
    # Feature exchange hands a decoder another network's bottleneck: decode must use it,
    # and must not rely on state cached by the last encode (such as unpooling indices).
    torch.manual_seed(2)
    x = torch.randn(2, 3, 64, 64)
    model = calibrated(build(name), x)
    with torch.no_grad():
        features = model.encode(x)
        expected = model(x)
        model.encode(torch.randn(2, 3, 64, 64))
        assert torch.equal(model.decode(features), expected)
        swapped = [*features[:-1], torch.randn_like(features[-1])]
        assert (model.decode(swapped) - expected).abs().mean() > 1e-3


@pytest.mark.parametrize("name", sorted(SMALL))
def test_feature_points_hooks(name):
    model = build(name).eval()
    assert set(TAPS) <= set(model.feature_points)
    modules = dict(model.named_modules())
    captured: dict[str, torch.Tensor] = {}
    for tap, module_name in model.feature_points.items():
        modules[module_name].register_forward_hook(
            lambda _m, _i, out, tap=tap: captured.__setitem__(tap, out)
        )
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        bottleneck = model.encode(x)[-1]
        model(x)
    assert set(captured) == set(model.feature_points)
    assert all(isinstance(t, torch.Tensor) and t.dim() == 4 for t in captured.values())
    assert captured["stage1"].shape[-2:] == (16, 16)
    assert captured["stage2"].shape[-2:] == (8, 8)
    assert torch.equal(captured["bottleneck"], bottleneck)
    assert captured["decoder"].shape[-1] in (32, 64)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_parameter_gets_a_gradient(name):
    # No unused parameters, so DDP works without find_unused_parameters.
    model = build(name).train()
    torch.manual_seed(3)
    model(torch.randn(2, 3, 37, 45)).logsumexp(dim=1).mean().backward()
    first_conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad is not None and first_conv.weight.grad.abs().sum() > 0
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing


@pytest.mark.parametrize("name", sorted(SMALL))
def test_eval_is_deterministic(name):
    x = torch.randn(1, 3, 40, 40, generator=torch.Generator().manual_seed(4))
    first, second = build(name, seed=5).eval(), build(name, seed=5).eval()
    with torch.no_grad():
        out = first(x)
        assert torch.equal(out, first(x))
        assert torch.equal(out, second(x))
        assert not torch.equal(out, build(name, seed=6).eval()(x))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_single_channel_input(name):
    model = MODELS.build(name, in_channels=1, out_channels=1, **SMALL[name]).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 24, 40)).shape == (1, 1, 24, 40)


@pytest.mark.parametrize(
    ("name", "kwargs", "low", "high"),
    [
        ("fanet", {"base_channels": 32}, 5.0e6, 6.5e6),
        ("fanet", {"base_channels": 64}, 20e6, 25e6),
        ("mobilenetv2_unet", {"width_mult": 1.0}, 4.0e6, 5.0e6),
        ("enet", {}, 0.30e6, 0.45e6),
    ],
)
def test_parameter_counts(name, kwargs, low, high):
    count = sum(p.numel() for p in MODELS.build(name, **kwargs).parameters())
    assert low <= count <= high


def test_enet_rejects_too_many_input_channels():
    with pytest.raises(MeddistillError, match="input channels"):
        ENet(in_channels=16)


class _Constant(nn.Module):
    """Logits ``(B, 2, *S)`` of one fixed value per class, whatever the input."""

    def __init__(self, background: float, vessel: float) -> None:
        super().__init__()
        self.logits = torch.tensor([background, vessel])

    def forward(self, x):
        return self.logits.view(1, 2, *[1] * (x.dim() - 2)).expand(x.shape[0], 2, *x.shape[2:])


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (1, 1, 2, 3, 4)])
def test_ensemble_softmax_is_the_mean_of_its_members_probabilities(shape):
    # member 1: p(vessel) = sigmoid(0) = 0.5; member 2: sigmoid(ln 3) = 0.75; mean 0.625
    ensemble = ProbabilityEnsemble([_Constant(0.0, 0.0), _Constant(0.0, torch.log(torch.tensor(3.0)).item())])
    probability = torch.softmax(ensemble(torch.zeros(shape)), dim=1)
    assert probability.shape == (shape[0], 2, *shape[2:])
    assert torch.allclose(probability[:, 1], torch.full(probability[:, 1].shape, 0.625))


def test_ensemble_passes_gradients_to_every_member_and_needs_two():
    members = [MODELS.build("enet", in_channels=3, out_channels=2) for _ in range(2)]
    ProbabilityEnsemble(members)(torch.randn(1, 3, 32, 32)).sum().backward()
    assert all(p.grad is not None for m in members for p in m.parameters() if p.requires_grad)
    with pytest.raises(MeddistillError, match="at least two models, got 1"):
        ProbabilityEnsemble(members[:1])
