"""One declaration per setting: the executor spec, the resume fingerprint and --help derive from it."""
import dataclasses

import pytest

from pipelines.cli import parser
from pipelines.core import records
from pipelines.core.config import Config, computing_settings
from pipelines.stages import SECTIONS, STAGES, load_config
from pipelines.training.remote import TrainSpec
from pipelines.training.resume import setup_fingerprint
from pipelines.training.section import TrainSection

META = records.DatasetMeta(name="digits", split="train", num_rows=1000, height=28, width=28, channels=1,
                           class_names=[str(k) for k in range(10)])
# Settings that say how a training runs, not what it computes: they may change on resume.
RUNTIME = {"epochs", "reader_workers", "threads_per_worker", "nics", "start_timeout", "checkpoint", "resume",
           "deterministic", "export_saved_model", "overlap", "fusion_threshold_mb", "cycle_time_ms", "timeline"}


def _spec(settings: TrainSection, **data) -> TrainSpec:
    return TrainSpec(settings=settings, train_path="/d/train", val_path=None, input_shape=(28, 28, 1),
                     num_classes=10, train_rows=1000, val_rows=0, **data)


def _another_value(f: dataclasses.Field):
    """A valid value different from the default, whatever the setting's type."""
    choices = f.metadata.get("choices")
    if choices:
        return next(c for c in choices if c != f.default)
    samples = {"model": "lenet", "validation": 0.1, "nics": ["lo"], "split": "train_aug",
               "early_stopping_patience": 3, "threads_per_worker": 1, "lr_decay": 0.5,
               "fusion_threshold_mb": 32.0, "cycle_time_ms": 5.0}
    if f.name in samples:
        return samples[f.name]
    if isinstance(f.default, bool):
        return not f.default
    if isinstance(f.default, (int, float)):
        return f.default * 2 + 1 if isinstance(f.default, int) else f.default + 0.5
    raise AssertionError(f"no sample value for train.{f.name}")


def test_runtime_settings_are_exactly_the_declared_ones():
    declared = {f.name for f in dataclasses.fields(TrainSection) if f.metadata.get("runtime")}
    assert declared == RUNTIME
    assert set(computing_settings(TrainSection())) == {f.name for f in dataclasses.fields(TrainSection)} - RUNTIME


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(TrainSection)])
def test_every_setting_that_shapes_training_changes_the_fingerprint(name):
    field = {f.name: f for f in dataclasses.fields(TrainSection)}[name]
    base = TrainSection()
    changed = dataclasses.replace(base, **{name: _another_value(field)})
    same = setup_fingerprint(_spec(base), META) == setup_fingerprint(_spec(changed), META)
    assert same == (name in RUNTIME), f"train.{name}"


def test_schedule_settings_no_longer_resume_silently():
    """The defect: warm-up, early stopping and the shuffle buffer were missing from the fingerprint."""
    base = setup_fingerprint(_spec(TrainSection()), META)
    for change in ({"warmup_epochs": 2.0}, {"early_stopping_patience": 2}, {"shuffle_buffer": 500}):
        assert setup_fingerprint(_spec(dataclasses.replace(TrainSection(), **change)), META) != base, change
    assert setup_fingerprint(_spec(TrainSection(), augment={"pipeline": [{"op": "flip_lr"}]}), META) != base
    other_data = dataclasses.replace(META, class_names=list("abcdefghij"))
    assert setup_fingerprint(_spec(TrainSection()), other_data) != base


def test_the_spec_carries_the_section_as_configured():
    cfg = load_config("conf/mnist.yaml", ["train.warmup_epochs=1.5", "train.shuffle_buffer=77"])
    spec = _spec(cfg.train)
    assert spec.settings is cfg.train and spec.settings.warmup_epochs == 1.5 and spec.settings.shuffle_buffer == 77


def test_help_lists_every_setting_of_a_stage_from_its_declaration():
    text = parser()._subparsers._group_actions[0].choices["train"].format_help()
    for f in dataclasses.fields(TrainSection):
        assert f"train.{f.name} (" in text, f.name
    assert "train.warmup_epochs (float, default 0.0, >= 0.0): ramp" in text
    run_help = parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert "ingest.partition_mb (" in run_help and "score.batch_size (" in run_help


def test_every_stage_section_is_validated_by_load_config():
    cfg = load_config("conf/mnist.yaml")
    assert set(cfg.sections) == set(SECTIONS)
    for stage in STAGES.values():
        for name, cls in stage.sections.items():
            assert isinstance(getattr(cfg, name), cls)


def test_config_is_immutable_and_replaced_whole():
    cfg = load_config("conf/mnist.yaml")
    with pytest.raises(AttributeError):
        cfg.train = None
    other = cfg.replace(train=dataclasses.replace(cfg.train, epochs=1))
    assert other.train.epochs == 1 and cfg.train.epochs != 1 and isinstance(other, Config)
    assert other.to_dict()["train"]["epochs"] == 1 and other.source == cfg.source
