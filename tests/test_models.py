"""The zoo: every seed architecture builds and has the seed's parameter count."""
import pytest

from pipelines.core.config import ConfigError
from pipelines.inference.model_refs import FILE, FUNCTION, RUN, TRAINABLE, classify
from pipelines.training.networks import build_model
from pipelines.training.zoo import MODELS

SEED_PARAMS = {
    ("mnist_cnn", (28, 28, 1)): 1_199_882,
    ("simple_conv", (28, 28, 1)): 2_770_634,
    ("lenet", (28, 28, 1)): 3_255_914,
    ("lenet_cifar", (32, 32, 3)): 4_239_978,
    ("torres", (28, 28, 1)): 62_346,
    ("basic", (28, 28, 1)): 203_434,
    ("mnist_cnn_exp2", (28, 28, 1)): 887_530,
    ("vgg_bn", (28, 28, 1)): 871_978,          # not a seed model: the zoo's Fashion-MNIST pick
}


@pytest.mark.parametrize("name, shape", list(SEED_PARAMS))
def test_parameter_counts(name, shape):
    model = build_model(name, shape, 10)
    assert model.count_params() == SEED_PARAMS[(name, shape)]
    assert model.input.dtype.name == "uint8" and model.output.shape[-1] == 10


def test_every_zoo_entry_is_covered():
    assert {name for name, _ in SEED_PARAMS} == set(MODELS)


def test_user_models_from_file_run_and_function(tmp_path):
    model = build_model("torres", (28, 28, 1), 10)
    path = str(tmp_path / "mine.keras")
    model.save(path)
    assert classify(path, TRAINABLE, "train.model").kind == FILE
    assert build_model(path, (28, 28, 1), 10).count_params() == 62_346
    run = tmp_path / "runs" / "last_night"
    run.mkdir(parents=True)
    model.save(str(run / "model.keras"))
    assert classify(str(run), TRAINABLE, "train.model").location == str(run / "model.keras")
    assert classify(str(run), TRAINABLE, "train.model").kind == RUN
    assert build_model(str(run), (28, 28, 1), 10).count_params() == 62_346
    assert classify("pipelines.training.zoo:basic", TRAINABLE, "train.model").kind == FUNCTION
    assert build_model("pipelines.training.zoo:basic", (28, 28, 1), 10).count_params() == 203_434
    assert build_model("baseline", (28, 28, 1), 10).name == "baseline"      # an experiment variant trains too
    with pytest.raises(ConfigError, match="train.model: unknown model 'resnet9000'; train.model takes an "
                                          "architecture \\(baseline, basic, dense_512, "):
        classify("resnet9000", TRAINABLE, "train.model")
    with pytest.raises(ConfigError, match="module 'no_such_module' is not importable"):
        classify("no_such_module:f", TRAINABLE, "train.model")
    with pytest.raises(ConfigError, match="absent.keras does not exist"):
        classify(str(tmp_path / "absent.keras"), TRAINABLE, "train.model")
    with pytest.raises(ConfigError, match="train.model: EfficientNetLite0 is a pretrained registry network; "
                                          "train.model takes an architecture"):
        classify("EfficientNetLite0", TRAINABLE, "train.model")
