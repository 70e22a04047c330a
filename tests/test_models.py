"""The zoo: every seed architecture builds and has the seed's parameter count."""
import pytest

from pipelines.training.zoo import MODELS, build_model, check_model_name

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


def test_user_models_from_file_and_function(tmp_path):
    model = build_model("torres", (28, 28, 1), 10)
    path = str(tmp_path / "mine.keras")
    model.save(path)
    check_model_name(path)
    assert build_model(path, (28, 28, 1), 10).count_params() == 62_346
    check_model_name("pipelines.training.zoo:basic")
    assert build_model("pipelines.training.zoo:basic", (28, 28, 1), 10).count_params() == 203_434
    with pytest.raises(KeyError, match="unknown model 'resnet9000'"):
        check_model_name("resnet9000")
    with pytest.raises(KeyError, match="module 'no_such_module' is not importable"):
        check_model_name("no_such_module:f")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        check_model_name(str(tmp_path / "absent.keras"))
