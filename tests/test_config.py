import pytest

from pipelines.core.config import ConfigError
from pipelines.stages import load_config


def test_demo_conf_is_valid_and_run_name_defaults_to_file(tmp_path):
    cfg = load_config("conf/mnist.yaml")
    assert cfg.train.model == "mnist_cnn" and cfg.train.num_proc == 2 and cfg.run.name == "mnist"
    p = tmp_path / "my_exp.yaml"
    p.write_text("train: {epochs: 2}\n")
    cfg = load_config(str(p))
    assert cfg.run.name == "my_exp" and cfg.train.epochs == 2 and cfg.train.batch_size == 128


def test_set_overrides_parse_yaml_values():
    cfg = load_config("conf/mnist.yaml", ["train.epochs=1", "train.learning_rate=2e-3", "train.scale_lr=false",
                                          "spark.conf={spark.ui.enabled: 'false'}", "train.nics=[lo]"])
    assert cfg.train.epochs == 1 and cfg.train.learning_rate == 0.002 and cfg.train.scale_lr is False
    assert cfg.spark.conf == {"spark.ui.enabled": "false"} and cfg.train.nics == ["lo"]


@pytest.mark.parametrize("text, message", [
    ("train: {epoch: 3}", r"x.yaml: unknown key 'train.epoch' \(did you mean 'epochs'\?\)"),
    ("trian: {}", r"x.yaml: unknown section 'trian' \(did you mean 'train'\?\)"),
    ("train: {epochs: three}", r"train.epochs: expected an integer, got 'three'"),
    ("train: {epochs: 2.5}", r"train.epochs: expected an integer"),
    ("train: {epochs: 0}", r"train.epochs: 0 is below the minimum 1"),
    ("train: {scale_lr: 'yes'}", r"train.scale_lr: expected true or false"),
    ("train: {validation: 1.5}", r"train.validation: expected null, a fraction between 0 and 1 .* got 1.5"),
    ("train: {validation: 'is val'}", r"train.validation: expected null, .* got 'is val'"),
    ("train: {validation: true}", r"train.validation: expected null"),
    ("train: {optimizer: lamb}", r"train.optimizer: 'lamb' is not one of adam, adadelta"),
    ("train: [1, 2]", r"'train' must be a mapping"),
    ("- a\n- b", r"top level must be a mapping"),
    ("train: {epochs: [", r"not valid YAML"),
    ("run: {name: ../escape}", r"run.name '../escape' must be a plain name"),
    ("tracking: {mlfow: true}", r"unknown key 'tracking.mlfow' \(did you mean 'mlflow'\?\)"),
    ("tracking: {mlflow: 'yes'}", r"tracking.mlflow: expected true or false"),
    ("tracking: {uri: [a]}", r"tracking.uri: expected a string"),
])
def test_bad_conf_names_file_and_key(tmp_path, text, message):
    p = tmp_path / "x.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(str(p))


@pytest.mark.parametrize("override, message", [
    ("train.epochs", "expected KEY=VALUE"),
    ("epochs=1", "must be SECTION.NAME"),
    ("tran.epochs=1", "unknown section 'tran'"),
    ("train.epoch=1", "unknown key 'train.epoch'"),
    # Horovod's levers (pipelines/train/step.py): a bad value names the key
    ("train.compression=gzip", r"train.compression: 'gzip' is not one of none, fp16"),
    ("train.backward_passes_per_step=0", r"train.backward_passes_per_step: 0 is below the minimum 1"),
    ("train.backward_passes_per_step=two", r"train.backward_passes_per_step: expected an integer"),
    ("train.fusion_threshold_mb=-1", r"train.fusion_threshold_mb: -1.0 is below the minimum 0.0"),
    ("train.cycle_time_ms=0", r"train.cycle_time_ms: 0.0 is below the minimum 0.1"),
    ("train.overlap=sometimes", r"train.overlap: expected true or false"),
    ("train.timeline=1", r"train.timeline: expected true or false"),
])
def test_bad_override(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config("conf/mnist.yaml", [override])


def test_yaml_is_parsed_safely(tmp_path):
    p = tmp_path / "evil.yaml"
    p.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(p))


def test_transfer_conf_is_valid_and_checked():
    cfg = load_config("conf/transfer_mnist.yaml")
    assert cfg.transfer.model == "EfficientNetLite0" and cfg.transfer.weights == "imagenet"
    assert cfg.transfer.train_rows == 40000 and cfg.transfer.reg_param == 0.001 and cfg.run.name == "transfer_mnist"
    with pytest.raises(ConfigError, match=r"unknown key 'transfer.train_row' \(did you mean 'train_rows'\?\)"):
        load_config("conf/transfer_mnist.yaml", ["transfer.train_row=10"])
    with pytest.raises(ConfigError, match=r"transfer.elastic_net: 2.0 is above the maximum 1.0"):
        load_config("conf/transfer_mnist.yaml", ["transfer.elastic_net=2"])
