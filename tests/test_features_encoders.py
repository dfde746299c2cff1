"""Tests of the tile encoders and of weight loading."""

import sys

import numpy as np
import pytest
import torch

from skrnafm.features import (
    EfficientNetLite0Encoder,
    ModuleEncoder,
    TileEncoder,
    TimmEncoder,
    get_encoder,
)
from skrnafm.features._efficientnet import EfficientNetLite0
from skrnafm.features._weights import read_state_dict

# ImageNet-1k classes 281-285 are the domestic cats (tabby ... Egyptian cat).
IMAGENET_CATS = range(281, 286)


@pytest.fixture(scope="module", autouse=True)
def single_torch_thread():
    """Run the encoder on one thread: on a busy shared machine a two-thread
    OpenMP team can run many times slower than one thread."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def lite0():
    return EfficientNetLite0Encoder()


@pytest.fixture(scope="module")
def lite0_state(lite0):
    """The bundled weight file's state dict (before batch-norm folding)."""
    return read_state_dict(lite0.weights_path)


def test_efficientnet_classifies_cat(lite0):
    skimage_data = pytest.importorskip("skimage.data")
    cat = skimage_data.chelsea()[None]

    with torch.no_grad():
        probabilities = lite0.classify(lite0.transform(cat)).softmax(dim=1)[0]

    assert int(probabilities.argmax()) in IMAGENET_CATS
    assert float(probabilities[list(IMAGENET_CATS)].sum()) > 0.5


def test_efficientnet_output_shape(lite0):
    tiles = np.random.default_rng(0).integers(0, 256, size=(3, 256, 256, 3), dtype=np.uint8)

    batch = lite0.transform(tiles)
    with torch.no_grad():
        features = lite0(batch)

    assert batch.shape == (3, 3, 224, 224)
    assert batch.dtype == torch.float32
    assert features.shape == (3, 1280)
    assert lite0.output_dim == 1280


def test_efficientnet_folded_batchnorm_same_output(lite0, lite0_state):
    unfolded = EfficientNetLite0()
    unfolded.load_state_dict(lite0_state)
    unfolded.eval()
    tiles = np.random.default_rng(1).integers(0, 256, size=(2, 224, 224, 3), dtype=np.uint8)
    batch = lite0.transform(tiles)

    with torch.no_grad():
        expected = unfolded.forward_features(batch)
        features = lite0(batch)

    torch.testing.assert_close(features, expected, rtol=1e-4, atol=1e-4)


def test_efficientnet_interface_attributes(lite0):
    assert isinstance(lite0, TileEncoder)
    assert lite0.name == "efficientnet_lite0"
    assert lite0.preferred_dtype == torch.bfloat16


def test_transform_scales_to_unit_range(lite0):
    white = np.full((1, 224, 224, 3), 255, dtype=np.uint8)
    black = np.zeros((1, 224, 224, 3), dtype=np.uint8)

    assert torch.allclose(lite0.transform(white), torch.ones(1, 3, 224, 224))
    assert torch.allclose(lite0.transform(black), -torch.ones(1, 3, 224, 224))


def test_transform_rejects_bad_shape(lite0):
    with pytest.raises(ValueError, match=r"\(n_tiles, height, width, 3\)"):
        lite0.transform(np.zeros((224, 224, 3), dtype=np.uint8))


def test_weights_mismatch_names_file_and_keys(tmp_path, lite0_state):
    state = dict(lite0_state)
    del state["_conv_stem.weight"]
    state["_fc.weight"] = torch.zeros(10, 1280)
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken_lite0.pth"
    torch.save(state, path)

    with pytest.raises(ValueError, match="broken_lite0.pth") as info:
        EfficientNetLite0Encoder(weights=path)

    message = str(info.value)
    assert "missing keys: _conv_stem.weight" in message
    assert "unexpected keys: extra.weight" in message
    assert "_fc.weight: file (10, 1280) vs model (1000, 1280)" in message


def test_weights_nested_module_prefix_loads(tmp_path, lite0, lite0_state):
    wrapped = {"state_dict": {f"module.{key}": value for key, value in lite0_state.items()}}
    path = tmp_path / "checkpoint.pth"
    torch.save(wrapped, path)

    encoder = EfficientNetLite0Encoder(weights=tmp_path)

    assert encoder.weights_path == str(path)
    assert encoder.fingerprint() == lite0.fingerprint()


def test_weights_safetensors_loads(tmp_path, lite0, lite0_state):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({key: value.contiguous() for key, value in lite0_state.items()}, str(path))

    encoder = EfficientNetLite0Encoder(weights=path)

    assert encoder.fingerprint() == lite0.fingerprint()


def test_weights_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        EfficientNetLite0Encoder(weights=tmp_path / "absent.pth")


def test_weights_empty_directory_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        EfficientNetLite0Encoder(weights=tmp_path)


def test_weights_not_a_state_dict_raises(tmp_path):
    path = tmp_path / "numbers.pth"
    torch.save([1, 2, 3], path)

    with pytest.raises(ValueError, match="does not contain a state dict"):
        EfficientNetLite0Encoder(weights=path)


def test_fingerprint_changes_with_weights(tmp_path, lite0, lite0_state):
    state = dict(lite0_state)
    state["_fc.bias"] = state["_fc.bias"] + 1.0
    path = tmp_path / "shifted.pth"
    torch.save(state, path)

    shifted = EfficientNetLite0Encoder(weights=path)

    assert shifted.fingerprint() != lite0.fingerprint()


def test_fingerprint_changes_with_input_size(lite0):
    smaller = EfficientNetLite0Encoder(input_size=192)

    assert smaller.fingerprint() != lite0.fingerprint()


def test_module_encoder_infers_output_dim():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3), torch.nn.AdaptiveAvgPool2d(1))

    encoder = ModuleEncoder(net, input_size=32, name="tiny")
    with torch.no_grad():
        features = encoder(encoder.transform(np.zeros((2, 40, 40, 3), dtype=np.uint8)))

    assert encoder.output_dim == 6
    assert encoder.name == "tiny"
    assert features.shape == (2, 6)


def _halve_tiles(tiles):
    return torch.from_numpy(tiles[:, ::2, ::2].copy()).permute(0, 3, 1, 2).float()


def test_module_encoder_uses_custom_transform():
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(4))

    encoder = ModuleEncoder(net, output_dim=4, transform=_halve_tiles)
    batch = encoder.transform(np.zeros((2, 16, 16, 3), dtype=np.uint8))

    assert batch.shape == (2, 3, 8, 8)


def test_module_encoder_rejects_non_module():
    with pytest.raises(TypeError, match="torch.nn.Module"):
        ModuleEncoder(lambda x: x)


def test_get_encoder_default_and_passthrough(lite0):
    assert isinstance(get_encoder("efficientnet-lite0"), EfficientNetLite0Encoder)
    assert get_encoder(lite0) is lite0
    assert isinstance(get_encoder(torch.nn.Sequential(torch.nn.Flatten())), ModuleEncoder)


def test_get_encoder_unknown_name_raises():
    with pytest.raises(ValueError, match="Unknown encoder='resnet9000'"):
        get_encoder("resnet9000")


def test_timm_encoder_without_timm_explains_install(monkeypatch):
    # A None entry in sys.modules makes "import timm" raise ImportError.
    monkeypatch.setitem(sys.modules, "timm", None)

    with pytest.raises(ImportError, match=r"pip install 'skrnafm\[timm\]'"):
        TimmEncoder("vit_tiny_patch16_224")


TIMM_VIT = "vit_tiny_patch16_224"
TIMM_KWARGS = {"img_size": 32, "patch_size": 8, "depth": 2}


def test_timm_encoder_loads_local_weights(tmp_path):
    timm = pytest.importorskip("timm")
    source = timm.create_model(TIMM_VIT, pretrained=False, num_classes=0, **TIMM_KWARGS).eval()
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    tiles = np.random.default_rng(0).integers(0, 256, size=(2, 48, 48, 3), dtype=np.uint8)

    encoder = TimmEncoder(TIMM_VIT, weights=path, model_kwargs=TIMM_KWARGS)
    batch = encoder.transform(tiles)
    with torch.no_grad():
        expected = source(batch)
        features = encoder(batch)

    assert encoder.output_dim == source.num_features
    assert batch.shape == (2, 3, 32, 32)
    torch.testing.assert_close(features, expected)


def test_timm_encoder_ignores_classifier_head(tmp_path):
    timm = pytest.importorskip("timm")
    with_head = timm.create_model(TIMM_VIT, pretrained=False, num_classes=5, **TIMM_KWARGS)
    path = tmp_path / "vit_head.pth"
    torch.save(with_head.state_dict(), path)

    encoder = TimmEncoder(TIMM_VIT, weights=path, model_kwargs=TIMM_KWARGS)

    assert encoder.output_dim == with_head.num_features


def test_timm_encoder_mismatched_weights_raise(tmp_path):
    timm = pytest.importorskip("timm")
    deeper = timm.create_model(TIMM_VIT, pretrained=False, num_classes=0, **{**TIMM_KWARGS, "depth": 3})
    path = tmp_path / "deeper_vit.pth"
    torch.save(deeper.state_dict(), path)

    with pytest.raises(ValueError, match=r"deeper_vit\.pth.*unexpected keys: blocks\.2\."):
        TimmEncoder(TIMM_VIT, weights=path, model_kwargs=TIMM_KWARGS)


def test_timm_encoder_random_weights_warn():
    pytest.importorskip("timm")
    from skrnafm.exceptions import SkrnafmWarning

    with pytest.warns(SkrnafmWarning, match="random weights"):
        TimmEncoder(TIMM_VIT, model_kwargs=TIMM_KWARGS)


@pytest.mark.parametrize(
    ("name", "kind"),
    [("efficientnet_lite0", "efficientnet_lite0"), ("EfficientNet-Lite0", "efficientnet_lite0"),
     ("timm:resnet50", "timm"), ("timm:", None), ("resnet50", None)],
)
def test_encoder_kind_of_names(name, kind):
    from skrnafm.features._encoders import encoder_kind

    assert encoder_kind(name) == kind
