"""The model side of featurizers/, without Spark: the torch-free weights reader, EfficientNet-Lite's
accuracy on real ImageNet images against the PyTorch reference, and every registry entry."""
import io
import os
import pickle
import sys
import types
import zipfile

import numpy as np
import pytest
from PIL import Image

from pipelines.images.pixels import fit_batch
from pipelines.inference.model_files import network_from_zoo
from pipelines.inference.network import network_input
from pipelines.inference.pretrained import keras_models, registry
from pipelines.inference.pretrained.torch_weights import (
    LEGACY_MAGIC,
    LEGACY_PROTOCOL,
    WeightsFileError,
    read_state_dict,
)


def _legacy_file(path, payload: bytes):
    with open(path, "wb") as f:
        for header in (LEGACY_MAGIC, LEGACY_PROTOCOL, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        f.write(payload)


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_weights_reader_refuses_a_file_that_would_run_code(tmp_path):
    marker = tmp_path / "pwned"
    legacy = tmp_path / "evil.pth"
    _legacy_file(legacy, pickle.dumps({"w": _RunsCode(marker)}, protocol=2))
    with pytest.raises(WeightsFileError, match=r"evil.pth: refuses to load global '(posix|os)\.system'"):
        read_state_dict(str(legacy))
    zipped = tmp_path / "evil_zip.pth"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("archive/data.pkl", pickle.dumps({"w": _RunsCode(marker)}, protocol=2))
    with pytest.raises(WeightsFileError, match="refuses to load global"):
        read_state_dict(str(zipped))
    assert not marker.exists()


def test_weights_reader_errors_name_the_file(tmp_path):
    with pytest.raises(WeightsFileError, match="nope.pth: weights file does not exist"):
        read_state_dict(str(tmp_path / "nope.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(WeightsFileError, match="junk.pth: not a readable PyTorch state dict"):
        read_state_dict(str(junk))


@pytest.fixture
def fake_torch_globals(monkeypatch):
    """Importable stand-ins named torch.FloatStorage / torch._utils._rebuild_tensor_v2, so this test can
    *write* a zip-format state dict the way torch.save does (torch itself is not a dependency)."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    class FloatStorage:
        pass
    FloatStorage.__module__, FloatStorage.__qualname__ = "torch", "FloatStorage"

    def _rebuild_tensor_v2(*args):
        raise AssertionError("never called: the reader must use its own")
    _rebuild_tensor_v2.__module__, _rebuild_tensor_v2.__qualname__ = "torch._utils", "_rebuild_tensor_v2"
    torch.FloatStorage, utils._rebuild_tensor_v2, torch._utils = FloatStorage, _rebuild_tensor_v2, utils
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


def test_weights_reader_reads_the_zip_format(tmp_path, fake_torch_globals):
    import collections
    weight = np.arange(24, dtype=np.float32).reshape(2, 3, 4)

    class Tensor:  # pickles exactly like a torch tensor: _rebuild_tensor_v2(storage, offset, size, stride, ...)
        def __init__(self, key, offset, size, stride):
            self.args = (("storage", key), offset, size, stride)

        def __reduce__(self):
            storage, offset, size, stride = self.args
            return sys.modules["torch._utils"]._rebuild_tensor_v2, (
                storage, offset, size, stride, False, collections.OrderedDict())

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, tuple) and obj and obj[0] == "storage":
                return ("storage", fake_torch_globals.FloatStorage, obj[1], "cpu", 24)
            return None

    state = collections.OrderedDict(w=Tensor("0", 0, (2, 3, 4), (12, 4, 1)),
                                    view=Tensor("0", 1, (3, 2), (1, 3)))  # a strided view of the same storage
    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(state)
    path = tmp_path / "zip.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("zip/data.pkl", buf.getvalue())
        zf.writestr("zip/data/0", weight.tobytes())
    out = read_state_dict(str(path))
    np.testing.assert_array_equal(out["w"], weight)
    flat = weight.reshape(-1)
    np.testing.assert_array_equal(out["view"], [[flat[1 + i + 3 * j] for j in range(2)] for i in range(3)])


def test_packaged_efficientnet_lite_state_dict_is_read():
    spec = registry.get_spec("EfficientNetLite0")
    state = read_state_dict(registry.packaged_weights_path(spec))
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280) and state["_fc.weight"].dtype == np.float32
    assert len(state) == 296


def _input(images, model_name, weights=registry.IMAGENET):
    """What the network receives for these uint8 images: the engine's one rule (fit, then normalise)."""
    return network_input(network_from_zoo(model_name, weights), images)


def _top_k(model_name, samples):
    spec = registry.get_spec(model_name)
    model = keras_models.build_model(spec, registry.IMAGENET, keras_models.PROBABILITIES)
    batch = np.concatenate([_input(np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))[None], model_name)
                            for _, _, jpeg in samples])
    probs = model.predict(batch, verbose=0)
    return np.argsort(-probs, axis=1)[:, :5]


@pytest.mark.slow   # over 3 s: make test, not the everyday tier
@pytest.mark.parametrize("model_name, top1, top5", [("EfficientNetLite0", 17, 20), ("EfficientNetLite2", 18, 20)])
def test_efficientnet_lite_matches_pytorch_reference_on_real_imagenet_images(imagenet_samples, model_name, top1, top5):
    """The reference PyTorch models score 17/20 (Lite0) and 18/20 (Lite2) top-1, 20/20 top-5 on these."""
    labels = np.array([label for _, label, _ in imagenet_samples])
    best = _top_k(model_name, imagenet_samples)
    assert (best[:, 0] == labels).sum() == top1
    assert sum(label in row for label, row in zip(labels, best)) == top5


@pytest.mark.slow   # builds every registry network
@pytest.mark.parametrize("name", list(registry.MODELS))
def test_every_registry_model_builds_and_gives_its_feature_size(name):
    spec = registry.MODELS[name]
    features = keras_models.build_model(spec, registry.RANDOM_UNTRAINED, keras_models.FEATURES)
    gray = np.random.RandomState(0).randint(0, 256, (2, 28, 28, 1), dtype=np.uint8)  # any size, 1 channel
    x = _input(gray, name, registry.RANDOM_UNTRAINED)
    assert x.shape == (2, spec.input_size, spec.input_size, 3)
    out = features(x, training=False).numpy()
    assert out.shape == (2, spec.feature_dim) and np.isfinite(out).all()
    assert out.std() > 0  # a real network, not zeros


@pytest.mark.slow   # over 5 s: make test, not the everyday tier
def test_random_untrained_is_reproducible_and_differs_from_pretrained():
    spec = registry.get_spec("EfficientNetLite0")
    x = _input(np.random.RandomState(1).randint(0, 256, (1, 40, 30, 3), dtype=np.uint8), "EfficientNetLite0")
    a, b = (keras_models.build_model(spec, registry.RANDOM_UNTRAINED, keras_models.FEATURES)(x).numpy()
            for _ in range(2))
    pretrained = keras_models.build_model(spec, registry.IMAGENET, keras_models.FEATURES)(x).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, pretrained)


def test_the_pixel_rule_keeps_aspect_and_centres():
    img = np.zeros((1, 100, 200, 3), np.uint8)
    img[:, :, 40:160] = 255  # a white centre band, a bit wider than the centre square
    out = fit_batch(img, types.SimpleNamespace(height=50, width=50, channels=3, resize="crop", size=(50, 50)))
    assert out.shape == (1, 50, 50, 3)
    assert out.min() > 250  # all band: aspect kept (a squash to 50x50 would show the black sides), centred


def test_registry_errors_name_the_setting(tmp_path):
    with pytest.raises(registry.FeaturizerConfigError, match="modelName 'ResNet5' is not a known model; known: InceptionV3"):
        registry.get_spec("ResNet5")
    with pytest.raises(registry.FeaturizerConfigError, match="weights '/no/such.h5' is neither"):
        registry.check_weights(registry.get_spec("ResNet50"), "/no/such.h5")
    names = registry.imagenet_class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[1] == "goldfish"
