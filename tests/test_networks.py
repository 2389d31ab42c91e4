"""AlexNet and EfficientNet-Lite0 extractors: geometry, exact tiling, weights, config."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from convpaint.config import parse_config
from convpaint.errors import WeightsError
from convpaint.features import list_extractors
from convpaint.features import networks as nets
from convpaint.features.cnn import upsample_linear
from convpaint.features.networks import (
    AlexNetExtractor,
    AlexNetParams,
    EfficientNetLite0Extractor,
    EfficientNetLite0Params,
    receptive_fields,
    resolve_alexnet_layer,
    resolve_efficientnet_layer,
    upsample_linear_offset,
)
from convpaint.features.weights import WEIGHTS_ENV
from convpaint.tiling import plan_block, read_block

from .conftest import assert_halo_suffices, feature_pipeline, tiled_features

WEIGHTS_DIR = Path(__file__).resolve().parent.parent.parent / "shared" / "weights"
ALEXNET_FILE = WEIGHTS_DIR / "alexnet_features_imagenet1k_v1.pth"
LITE0_FILE = WEIGHTS_DIR / "efficientnet-lite0-57934424.pth"
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NEEDS = {"alexnet": ALEXNET_FILE, "efficientnet_lite0": LITE0_FILE}
needs_lite0 = pytest.mark.skipif(
    not LITE0_FILE.is_file(),
    reason=f"EfficientNet-Lite0 weights not found at {LITE0_FILE}",
)


def _use_weights(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Point $CONVPAINT_WEIGHTS_DIR at the shared weights (skip when a file is absent)."""
    for name in names:
        if not NEEDS[name].is_file():
            pytest.skip(f"{name} weights not found at {NEEDS[name]}")
    monkeypatch.setenv(WEIGHTS_ENV, str(WEIGHTS_DIR))


_pipeline = feature_pipeline
_tiled = tiled_features


CASES = {
    "alexnet": [{"name": "alexnet"}],
    "alexnet-pool1": [
        {"name": "alexnet", "layers": ["conv1", "relu1", "pool1"], "scalings": [1, 2]}
    ],
    "lite0": [{"name": "efficientnet_lite0"}],
    "lite0-blocks": [
        {
            "name": "efficientnet_lite0",
            "layers": ["stem", "block0", "block1"],
            "scalings": [1, 3],
        }
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("n_channels", [1, 3])
def test_tiled_features_equal_whole_image(
    case: str, n_channels: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Features through uneven tiles with halo are bit-identical to one whole-image block."""
    _use_weights(monkeypatch, CASES[case][0]["name"])
    image = (
        np.random.default_rng(0).normal(size=(n_channels, 61, 74)).astype(np.float32)
    )
    pipe = _pipeline(CASES[case], n_channels)
    whole = _tiled(image, pipe, tile=10_000)
    assert np.isfinite(whole).all() and whole.std() > 0
    np.testing.assert_array_equal(_tiled(image, pipe, 23), whole)


@pytest.mark.parametrize("case", sorted(CASES))
def test_halo_covers_dependencies(case: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A minimal halo block gives the same tile features as a much larger block."""
    _use_weights(monkeypatch, CASES[case][0]["name"])
    pipe = _pipeline(CASES[case])
    size = 2 * pipe.halo_2d + 3 * pipe.alignment_2d + 40
    image = np.random.default_rng(1).normal(size=(1, size, size)).astype(np.float32)
    assert_halo_suffices(
        pipe,
        image,
        (pipe.halo_2d + 20, pipe.halo_2d + 40, pipe.halo_2d + 21, pipe.halo_2d + 39),
    )


@pytest.mark.parametrize(
    ("factor", "offset"), [(2, 1.0), (4, 3.5), (2, 0.5), (6, 1.5), (8, 7.5)]
)
def test_upsampling_with_offset(factor: int, offset: float) -> None:
    """Offset upsampling reproduces a linear ramp at true centres and is exact on aligned crops."""
    h, w = 12, 9
    rows = factor * torch.arange(h, dtype=torch.float32) + offset
    cols = factor * torch.arange(w, dtype=torch.float32) + offset
    y = torch.stack([rows[:, None].expand(h, w), cols[None, :].expand(h, w)], dim=-1)
    out = upsample_linear_offset(y, factor, offset, (h * factor, w * factor))
    # inside the sampled range the interpolant of a ramp is the pixel centre itself
    centres = torch.arange(h * factor, dtype=torch.float32) + 0.5
    inner = (centres >= rows[0]) & (centres <= rows[-1])
    assert torch.allclose(out[inner, 0, 0], centres[inner], atol=1e-4)
    inner_x = (centres[: w * factor] >= cols[0]) & (centres[: w * factor] <= cols[-1])
    assert torch.allclose(out[0, inner_x, 1], centres[: w * factor][inner_x], atol=1e-4)
    # a crop starting at a multiple of the factor gives bit-identical interior values
    z = torch.rand(h, w, 3)
    full = upsample_linear_offset(z, factor, offset, (h * factor, w * factor))
    crop = upsample_linear_offset(
        z[3:10, 2:8], factor, offset, (7 * factor, 6 * factor)
    )
    m = 2 * factor
    assert torch.equal(
        crop[m:-m, m:-m],
        full[3 * factor + m : 10 * factor - m, 2 * factor + m : 8 * factor - m],
    )
    if offset == factor / 2:  # the half-pixel grid of upsample_linear
        assert torch.allclose(full, upsample_linear(z, factor), atol=1e-6)


def test_layers_geometry_and_names() -> None:
    """Layer names resolve; receptive fields, halo, alignment and feature names agree."""
    assert (
        resolve_alexnet_layer(0)
        == resolve_alexnet_layer("conv1")
        == resolve_alexnet_layer("features.0")
        == 0
    )
    assert resolve_alexnet_layer("pool3") == 12
    with pytest.raises(ValueError, match="conv1"):
        AlexNetParams(layers=["conv6"])
    assert resolve_efficientnet_layer("stem") == 0
    assert (
        resolve_efficientnet_layer("block15")
        == resolve_efficientnet_layer("_blocks.15")
        == 16
    )
    with pytest.raises(ValueError, match=re.escape("block0 .. block15")):
        EfficientNetLite0Params(layers=["block16"])
    # AlexNet conv1 (k11, s4, p2): output j sees input 4j-2 .. 4j+8, centred on pixel 4j+3
    assert receptive_fields([(11, 4, 2)]) == [(4, -2, 8)]
    a = AlexNetExtractor(AlexNetParams())
    assert (a.halo, a.alignment) == (42, 16)
    assert (
        a.n_features(1) == 3 * 64
        and a.n_features(3) == 3 * 64
        and a.n_features(2) == 6 * 64
    )
    names = AlexNetExtractor(
        AlexNetParams(layers=["pool1", "conv2"], scalings=[2])
    ).feature_names(2)
    assert len(names) == 2 * (64 + 192)
    assert names[5] == "alexnet|layer=pool1|scale=2|ch=0|unit=5"
    e = EfficientNetLite0Extractor(
        EfficientNetLite0Params(layers=["block4", "stem"], scalings=[1, 2])
    )
    assert e.n_features(1) == 2 * (32 + 40) == len(e.feature_names(1))
    assert (
        e.feature_names(3)[32]
        == "efficientnet_lite0|layer=block4|scale=1|ch=rgb|unit=0"
    )
    assert e.alignment == 16 and e.halo >= 2 * 8
    widths = "16 24 24 40 40 80 80 80 112 112 112 192 192 192 192 320"
    assert [t[1] for t in nets.EFFICIENTNET_LITE0_TAPS[1:]] == [
        int(c) for c in widths.split()
    ]
    with pytest.raises(ValueError, match="3 channels"):
        AlexNetExtractor(AlexNetParams(rgb=True)).n_features(2)


def test_alexnet_weights_and_pixel_alignment(monkeypatch: pytest.MonkeyPatch) -> None:
    """features.* load strict into torchvision AlexNet; conv1 lands on its centre pixels."""
    import torchvision

    _use_weights(monkeypatch, "alexnet")
    features = torchvision.models.alexnet(weights=None).features
    state = torch.load(ALEXNET_FILE, weights_only=True)
    features.load_state_dict(
        {k.removeprefix("features."): v for k, v in state.items()}, strict=True
    )
    features.eval()
    e = AlexNetExtractor(AlexNetParams(scalings=[1], rgb=False))
    image = np.random.default_rng(3).normal(size=(1, 64, 64)).astype(np.float32)
    feats = e(image)
    x = torch.from_numpy(image * 0.25 + 0.45).expand(1, 3, -1, -1)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    with torch.inference_mode():
        ref = features[0](x)[0].permute(1, 2, 0).numpy()  # (15, 15, 64)
    # output j is centred on pixel 4j + 3, where the interpolation weight is 0
    np.testing.assert_allclose(feats[3::4, 3::4][:15, :15], ref, rtol=1e-5, atol=1e-5)
    fp = e.fingerprint()
    assert fp["layers"] == [0] and len(fp["weights_sha256"]) == 64


@needs_lite0
def test_efficientnet_lite0_classifies_chelsea() -> None:
    """The full Lite0 (stem..head, _fc) calls skimage's chelsea an Egyptian cat (285)."""
    from skimage import data, transform

    img = transform.resize(data.chelsea(), (224, 224), anti_aliasing=True).astype(
        np.float32
    )
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    probs = nets.efficientnet_lite0_logits(x, LITE0_FILE).softmax(dim=1)[0]
    assert int(probs.argmax()) == 285
    assert float(probs[285]) > 0.5
    assert set(probs.topk(3).indices.tolist()) == {285, 281, 282}  # + tabby, tiger cat


@needs_lite0
def test_efficientnet_stem_depthwise_and_alignment() -> None:
    """Folded stem BN and the depthwise conv match torch; stem lands on pixels 2j+1."""
    import torch.nn.functional as F

    state = nets.load_efficientnet_lite0_state(1, LITE0_FILE)
    net = nets._Lite0(state, 1, torch.device("cpu"))
    image = np.random.default_rng(5).normal(size=(1, 32, 40)).astype(np.float32)
    x = torch.from_numpy(image * 0.25 + 0.45).expand(1, 3, -1, -1)
    x = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    t = {k: torch.from_numpy(v) for k, v in state.items()}
    with torch.inference_mode():
        ref = F.conv2d(
            F.pad(x, (0, 1, 0, 1)), t["_conv_stem.weight"], stride=2
        )  # TF 'SAME'
        ref = F.batch_norm(
            ref,
            t["_bn0.running_mean"],
            t["_bn0.running_var"],
            t["_bn0.weight"],
            t["_bn0.bias"],
            eps=1e-3,
        )
        assert torch.allclose(net.forward(x, {0})[0], ref, atol=1e-4)
        # stem output j covers input 2j .. 2j+2: the feature of pixel 2j+1 is exactly it
        params = EfficientNetLite0Params(scalings=[1], weights=LITE0_FILE)
        feats = EfficientNetLite0Extractor(params)(image)
        ref = ref[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(feats[1::2, 1::2], ref, rtol=1e-4, atol=1e-4)
        for k, stride in [(3, 1), (3, 2), (5, 1), (5, 2)]:
            z, w, b = torch.randn(1, 6, 16, 20), torch.randn(6, k, k), torch.randn(6)
            before, after = nets._same_padding(k, stride)
            conv = F.conv2d(
                F.pad(z, (before, after, before, after)),
                w[:, None],
                b,
                stride=stride,
                groups=6,
            )
            assert torch.allclose(
                nets._Lite0._depthwise(z, w, b, k, stride), conv, atol=1e-5
            )


def test_missing_weights_offline_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline without weights, the errors name every place tried and how to fix it."""
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(url: str) -> dict:
        raise WeightsError("no network")

    monkeypatch.setattr(nets, "_download", offline)
    with pytest.raises(WeightsError) as info:
        AlexNetExtractor(AlexNetParams()).fingerprint()
    msg = str(info.value)
    assert str(tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth") in msg
    assert WEIGHTS_ENV in msg and nets.ALEXNET_URL in msg and "no network" in msg
    with pytest.raises(WeightsError) as info:
        EfficientNetLite0Extractor(EfficientNetLite0Params())(
            np.zeros((1, 8, 8), np.float32)
        )
    msg = str(info.value)
    assert (
        str(tmp_path / "hub" / "checkpoints" / "efficientnet-lite0-57934424.pth") in msg
    )
    assert "no official download" in msg and WEIGHTS_ENV in msg
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "empty"))
    with pytest.raises(
        WeightsError,
        match=re.escape(str(Path("empty") / "efficientnet-lite0-57934424.pth")),
    ):
        EfficientNetLite0Extractor(EfficientNetLite0Params()).fingerprint()
    with pytest.raises(WeightsError, match="does not exist"):
        AlexNetExtractor(AlexNetParams(weights=tmp_path / "missing.pth")).fingerprint()


def test_weights_search_places_and_digest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights load from the hub cache under torchvision's name; a wrong file is refused."""
    _use_weights(monkeypatch, "alexnet", "efficientnet_lite0")
    from_env = AlexNetExtractor(AlexNetParams()).fingerprint()
    monkeypatch.delenv(WEIGHTS_ENV)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    shutil.copy(
        ALEXNET_FILE, tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    )
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert AlexNetExtractor(AlexNetParams()).fingerprint() == from_env
    configured = AlexNetExtractor(AlexNetParams(weights=ALEXNET_FILE)).fingerprint()
    assert configured == from_env
    assert AlexNetExtractor(AlexNetParams(layers=["conv2"])).fingerprint() != from_env
    with pytest.raises(WeightsError, match=re.escape("lacks features.0.weight")):
        AlexNetExtractor(AlexNetParams(weights=LITE0_FILE)).fingerprint()


def test_extractors_in_config(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both extractors are registered, validate in a config and run in a pipeline."""
    _use_weights(monkeypatch, "alexnet", "efficientnet_lite0")
    assert {"alexnet", "efficientnet_lite0", "vgg16"} <= set(list_extractors())
    cfg = parse_config({"features": [{"name": "alexnet"}]})
    (params,) = cfg.features.extractors
    assert (
        isinstance(params, AlexNetParams)
        and params.layers == ["conv1"]
        and params.scalings == [1, 2, 4]
    )
    specs = [
        {"name": "alexnet", "scalings": [1, 2]},
        {"name": "efficientnet_lite0", "layers": ["stem", "block2"]},
        {"name": "filters", "sigmas": [1.0]},
    ]
    pipe = _pipeline(specs, n_channels=2)
    assert (
        pipe.n_features
        == 2 * 2 * 64 + 2 * 2 * (32 + 24) + 2 * 9
        == len(pipe.feature_names())
    )
    image = np.random.default_rng(4).normal(size=(2, 30, 34)).astype(np.float32)
    block = plan_block(
        ((0, 1), (0, 30), (0, 34)), halo=pipe.halo, alignment=pipe.alignment
    )
    feats = pipe.compute(read_block(image[:, None], block), block.trim)
    assert feats.shape == (30 * 34, pipe.n_features) and np.isfinite(feats).all()
    with pytest.raises(ValueError, match="unknown EfficientNet-Lite0 layer"):
        parse_config({"features": [{"name": "efficientnet_lite0", "layers": ["head"]}]})
