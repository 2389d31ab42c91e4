"""Feature extractors: tiled == whole image, halo sufficiency, weights, registry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from convpaint.errors import UnknownExtractorError, WeightsError
from convpaint.features import list_extractors
from convpaint.features import weights as weights_mod
from convpaint.features.classical import (
    FilterBankExtractor,
    FilterBankParams,
    upgrade_stored_params,
)
from convpaint.features.cnn import (
    VGG16Extractor,
    VGG16Params,
    resolve_vgg16_layer,
    upsample_linear,
)
from convpaint.features.pipeline import Normalization
from convpaint.features.registry import build_extractor, params_model

from .conftest import assert_halo_suffices, feature_pipeline, tiled_features

_pipeline = feature_pipeline
_tiled = tiled_features


EXTRACTOR_CASES = {
    "vgg16": [{"name": "vgg16"}],
    "vgg16-torch": [{"name": "vgg16", "implementation": "torch"}],
    "vgg16-deeper": [
        {
            "name": "vgg16",
            "layers": ["conv1_1", "relu1_2", "conv2_1"],
            "scalings": [1, 3],
        }
    ],
    "filters": [{"name": "filters", "sigmas": [0.3, 1.0, 3.5]}],
    "filters-scipy": [
        {"name": "filters", "sigmas": [0.3, 1.0, 3.5], "implementation": "scipy"}
    ],
    "vgg16+filters": [
        {"name": "vgg16", "scalings": [1, 2]},
        {"name": "filters", "sigmas": [0.7, 2.0]},
    ],
}


@pytest.mark.parametrize("case", sorted(EXTRACTOR_CASES))
@pytest.mark.parametrize("n_channels", [1, 3])
def test_tiled_features_equal_whole_image(case: str, n_channels: int) -> None:
    """Features through uneven tiles with halo are bit-identical to one whole-image block."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(n_channels, 61, 74)).astype(np.float32)
    pipe = _pipeline(EXTRACTOR_CASES[case], n_channels)
    whole = _tiled(image, pipe, tile=10_000)
    np.testing.assert_array_equal(_tiled(image, pipe, 23), whole)


def test_default_filter_bank_tiled_equals_whole() -> None:
    """The default filter bank (sigma up to 10, halo 62) is exact through uneven tiles."""
    image = np.random.default_rng(2).normal(size=(1, 150, 170)).astype(np.float32)
    pipe = _pipeline([{"name": "filters"}])
    np.testing.assert_array_equal(_tiled(image, pipe, 77), _tiled(image, pipe, 10_000))


def _em_image(bench: Path) -> np.ndarray:
    from PIL import Image

    img = np.asarray(Image.open(bench / "isbi2012_em_membranes/images/0.png"))
    crop = img[:200, :230].astype(np.float32)
    return ((crop - crop.mean()) / crop.std())[None]


def test_fast_filter_bank_matches_scipy_implementation(bench: Path) -> None:
    """The fast filter bank computes the scipy implementation's features (to ~1e-5)."""
    image = _em_image(bench)
    fast = FilterBankExtractor(FilterBankParams())
    slow = FilterBankExtractor(FilterBankParams(implementation="scipy"))
    a, b = fast(image), slow(image)
    assert a.shape == b.shape and a.dtype == np.float32 and a.flags["C_CONTIGUOUS"]
    assert fast.feature_names(1) == slow.feature_names(1)
    # relative to each feature's range; the halo (block-edge handling) excluded
    h = fast.halo
    err = np.abs(a - b)[h:-h, h:-h].max(axis=(0, 1))
    assert (err / np.abs(b).max(axis=(0, 1))).max() < 2e-4
    assert np.median(err / np.abs(b).max(axis=(0, 1))) < 1e-6


@pytest.mark.parametrize(
    "filters",
    [["gaussian"], ["structure_tensor"], ["dog", "hessian"], ["laplacian", "gradient"]],
)
def test_fast_filter_subsets_equal_full_bank(filters: list[str]) -> None:
    """A subset of filters gives exactly the full bank's columns, channel by channel."""
    image = np.random.default_rng(3).normal(size=(2, 40, 52)).astype(np.float32)
    full = FilterBankExtractor(FilterBankParams(sigmas=[0.7, 1.6]))
    part = FilterBankExtractor(
        FilterBankParams(sigmas=[0.7, 1.6], filters=filters, intensity=False)
    )
    names = full.feature_names(2)
    cols = [names.index(n) for n in part.feature_names(2)]
    np.testing.assert_array_equal(part(image), full(image)[..., cols])


@pytest.mark.parametrize(
    ("implementation", "sigmas"),
    [
        ("fast", [0.5, 2.0]),
        ("fast", [0.3, 0.7, 1.0, 1.6, 3.5, 5.0, 10.0]),  # kernels wider than the block
        ("scipy", [0.5, 2.0]),
    ],
)
def test_filter_bank_region_and_out(implementation: str, sigmas: list[float]) -> None:
    """region= returns exactly that part of the block; out= may be a strided view."""
    image = np.random.default_rng(4).normal(size=(2, 45, 60)).astype(np.float32)
    e = FilterBankExtractor(
        FilterBankParams(sigmas=sigmas, implementation=implementation)
    )
    assert e.supports_region
    whole = e(image)
    for corner in [(slice(0, 5), slice(0, 7)), (slice(40, 45), slice(21, 60))]:
        np.testing.assert_array_equal(e(image, region=corner), whole[corner])
    region = (slice(7, 30), slice(11, 53))
    np.testing.assert_array_equal(e(image, region=region), whole[region])
    n = e.n_features(2)
    rows = np.full((23, 42, n + 5), -1.0, np.float32)
    got = e(image, region=region, out=rows[:, :, 2 : 2 + n])
    assert np.shares_memory(got, rows)
    np.testing.assert_array_equal(rows[:, :, 2 : 2 + n], whole[region])
    assert np.all(rows[:, :, :2] == -1) and np.all(rows[:, :, 2 + n :] == -1)


def test_fast_extractors_are_thread_safe() -> None:
    """Blocks computed concurrently in threads (work arrays are per thread) equal the
    same blocks computed one after another."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(6)
    blocks = [rng.normal(size=(1, 60 + 4 * i, 72)).astype(np.float32) for i in range(6)]
    for e in (
        FilterBankExtractor(FilterBankParams(sigmas=[0.7, 3.5])),
        VGG16Extractor(VGG16Params(scalings=[1, 2])),
    ):
        alone = [e(b) for b in blocks]
        with ThreadPoolExecutor(3) as pool:
            together = list(pool.map(e, blocks))
        for a, b in zip(alone, together, strict=True):
            np.testing.assert_array_equal(a, b)


def test_scipy_implementation_is_unchanged() -> None:
    """implementation: scipy gives the bits convpaint 0.1 gave (its models depend on it).

    The digest was computed with convpaint 0.1's filter bank (scipy 1.17, x86-64).
    """
    image = np.random.default_rng(7).normal(size=(2, 48, 56)).astype(np.float32)
    e = FilterBankExtractor(
        FilterBankParams(sigmas=[0.3, 1.0, 3.5], implementation="scipy")
    )
    digest = hashlib.sha256(e(image).tobytes()).hexdigest()
    assert digest == "626ec28d86cf849d0f2a8ba23c51d41c28a697b33fe4f9e4ff38918fe6153f21"


@pytest.mark.parametrize("n_channels", [1, 3])
def test_fast_vgg16_matches_torch(bench: Path, n_channels: int) -> None:
    """The compiled conv1_1 path (gray folded into the layer) computes torch's
    features to float rounding, for gray and RGB blocks."""
    gray = _em_image(bench)[:, :192, :224]
    image = np.concatenate([gray, gray[:, ::-1], -gray])[:n_channels]
    fast = VGG16Extractor(VGG16Params())
    slow = VGG16Extractor(VGG16Params(implementation="torch"))
    assert fast._fast and not slow._fast
    a, b = fast(image), slow(image)
    assert a.shape == b.shape == (192, 224, 192) and a.flags["C_CONTIGUOUS"]
    h = fast.halo
    np.testing.assert_allclose(a[h:-h, h:-h], b[h:-h, h:-h], rtol=0, atol=1e-4)
    assert np.abs(a - b)[h:-h, h:-h].max() < 1e-6 * np.abs(b).max() * 100


@pytest.mark.parametrize("implementation", ["fast", "torch"])
def test_vgg16_region_and_out(implementation: str) -> None:
    """region= returns exactly that part of the block; out= may be a strided view."""
    image = np.random.default_rng(5).normal(size=(1, 48, 64)).astype(np.float32)
    e = VGG16Extractor(VGG16Params(implementation=implementation))
    whole = e(image)
    for region in [
        (slice(0, 5), slice(0, 7)),
        (slice(13, 47), slice(9, 64)),
        (slice(0, 48), slice(0, 64)),
    ]:
        np.testing.assert_array_equal(e(image, region=region), whole[region])
    n = e.n_features(1)
    rows = np.full((34, 55, n + 2), -1.0, np.float32)
    region = (slice(13, 47), slice(9, 64))
    e(image, region=region, out=rows[:, :, 1 : 1 + n])
    np.testing.assert_array_equal(rows[:, :, 1 : 1 + n], whole[region])
    assert np.all(rows[:, :, 0] == -1) and np.all(rows[:, :, -1] == -1)


def test_models_without_implementation_keep_their_code_paths() -> None:
    """Stored filters and vgg16 params that name no implementation (convpaint 0.1
    models) build scipy / torch extractors with the fingerprints those models stored."""
    stored = FilterBankParams().model_dump(mode="json")
    del stored["implementation"]
    old = params_model("filters").model_validate(upgrade_stored_params(stored))
    assert old.implementation == "scipy"
    assert build_extractor(old).fingerprint() == {
        "implementation": "scipy.ndimage+central-differences",
        "dog_ratio": 0.625,
        "st_inner": 0.5,
    }
    # new models store the implementation explicitly; other extractors pass through
    new = FilterBankParams().model_dump(mode="json")
    assert new["implementation"] == "fast"
    assert upgrade_stored_params(new) == new
    assert upgrade_stored_params({"name": "alexnet"}) == {"name": "alexnet"}
    assert (
        build_extractor(FilterBankParams()).fingerprint()
        != build_extractor(old).fingerprint()
    )


@pytest.mark.parametrize("case", sorted(EXTRACTOR_CASES))
def test_halo_covers_dependencies(case: str) -> None:
    """Changing pixels beyond the halo never changes a tile's features."""
    rng = np.random.default_rng(1)
    pipe = _pipeline(EXTRACTOR_CASES[case])
    halo = pipe.halo_2d
    size = 2 * halo + 3 * pipe.alignment_2d + 40
    image = rng.normal(size=(1, size, size)).astype(np.float32)
    assert_halo_suffices(pipe, image, (halo + 20, halo + 40, halo + 20, halo + 40))


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_upsampling_matches_bilinear_and_is_offset_exact(factor: int) -> None:
    """Phase-wise upsampling equals torch's bilinear (to float rounding) and is exact on aligned crops."""
    y = torch.rand(24, 19, 5)
    ours = upsample_linear(y, factor)
    ref = torch.nn.functional.interpolate(
        y.permute(2, 0, 1)[None],
        scale_factor=factor,
        mode="bilinear",
        align_corners=False,
    )[0].permute(1, 2, 0)
    assert torch.allclose(ours, ref, atol=1e-6)
    crop = upsample_linear(y[4:20, 3:15], factor)
    f = factor
    assert torch.equal(crop[f:-f, f:-f], ours[5 * f : 19 * f, 4 * f : 14 * f])


def test_vgg16_layers_and_names() -> None:
    """Layers resolve from indices, 'features.N' and names; counts and names agree."""
    assert (
        resolve_vgg16_layer(0)
        == resolve_vgg16_layer("conv1_1")
        == resolve_vgg16_layer("features.0")
        == 0
    )
    assert resolve_vgg16_layer("pool2") == 9
    e = VGG16Extractor(VGG16Params(layers=["conv1_1", "conv2_1"], scalings=[1, 2]))
    assert e.n_features(1) == 2 * (64 + 128)
    assert len(e.feature_names(2)) == e.n_features(2)
    assert e.alignment == 4  # pool1 stride 2 x scaling 2
    assert VGG16Extractor(VGG16Params()).n_features(3) == 3 * 64  # RGB: one group


def test_bundled_weights_equal_the_imagenet_checkpoint(shared_weights: Path) -> None:
    """The bundled slice holds exactly the genuine ImageNet VGG16 layers."""
    full = torch.load(
        shared_weights / "vgg16_features_imagenet1k_v1.pth", weights_only=True
    )
    bundled = weights_mod.load_vgg16_state([0, 2, 5, 7])
    for key, value in bundled.items():
        np.testing.assert_array_equal(value, full[key].numpy())
    assert abs(float(bundled["features.0.weight"][0, 0, 0, 0]) - (-0.5537)) < 1e-4


def test_deeper_layers_from_weights_dir(
    shared_weights: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Layers beyond the bundle load from $CONVPAINT_WEIGHTS_DIR with a stable digest."""
    monkeypatch.setenv(weights_mod.WEIGHTS_ENV, str(shared_weights))
    e = VGG16Extractor(VGG16Params(layers=["conv3_1"], scalings=[1]))
    out = e(np.zeros((1, 16, 16), np.float32))
    assert out.shape == (16, 16, 256)
    # the digest of bundled layers is the same whichever file they came from
    a = weights_mod.digest(
        weights_mod.load_vgg16_state([0]), ["features.0.weight", "features.0.bias"]
    )
    b_state = weights_mod.load_vgg16_state(
        [0], shared_weights / "vgg16_features_imagenet1k_v1.pth"
    )
    assert a == weights_mod.digest(b_state, b_state.keys())


def test_missing_deep_weights_offline_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline without the full weights, the error names the places tried and the fix."""
    monkeypatch.delenv(weights_mod.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline() -> dict:
        raise WeightsError("no network")

    monkeypatch.setattr(weights_mod, "_download", offline)
    with pytest.raises(WeightsError) as info:
        weights_mod.load_vgg16_state([10])
    msg = str(info.value)
    assert (
        "not bundled" in msg
        and str(tmp_path / "hub") in msg
        and weights_mod.WEIGHTS_ENV in msg
    )
    with pytest.raises(WeightsError, match="does not exist"):
        weights_mod.load_vgg16_state([0], tmp_path / "missing.pth")


def test_registry_lists_builtins_and_suggests_names() -> None:
    """Built-ins are registered; an unknown name suggests the closest one."""
    names = list_extractors()
    assert {"vgg16", "filters"} <= set(names)
    with pytest.raises(UnknownExtractorError, match="did you mean 'filters'"):
        params_model("filter")
    e = build_extractor(params_model("filters")(sigmas=[1.0]))
    assert e.n_features(2) == 2 * (1 + 8)


def test_normalization_is_per_channel() -> None:
    """Normalisation subtracts the mean and divides by the std per channel; std 0 is safe."""
    norm = Normalization([1.0, 10.0], [2.0, 0.0])
    out = norm(np.array([[[3.0]], [[12.0]]]))
    np.testing.assert_allclose(out.ravel(), [1.0, 2.0])
