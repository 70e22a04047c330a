"""The layers of the library, declared once (tests/test_layering.py checks the code against them).

  core      pipelines.core: config engine, record contract, storage, errors, Spark session, TF runtime
  engines   what several stages share; they import core and each other, never a stage
  stages    pipelines/<name>/ holding a stage.py (the stage table lists them); a stage imports core and
            engines, never another stage
  services  what wraps every command rather than being one (MLflow tracking)

EXECUTOR_MODULES are the modules whose code runs inside Spark tasks (and Horovod/tf.distribute
workers): they must import nothing of the driver side, and every function handed to Spark must be
theirs.  Adding executor code means adding its module here; the layering test says when a module is
missing.
"""
ENGINES = ("pipelines.images", "pipelines.augmentation", "pipelines.inference", "pipelines.training",
           "pipelines.datasets")
SERVICES = ("pipelines.tracking",)
EXECUTOR_MODULES = (      # a package stands for all its modules
    "pipelines.augment.remote",
    "pipelines.augmentation",
    "pipelines.core.parquet_remote",
    "pipelines.export.remote",
    "pipelines.images.decode",
    "pipelines.images.image_struct",
    "pipelines.images.pixels",
    "pipelines.images.spark_images_remote",
    "pipelines.inference.cnn_model_remote",
    "pipelines.inference.image_resizer_remote",
    "pipelines.inference.network",
    "pipelines.inference.pretrained",
    "pipelines.ingest.folder_remote",
    "pipelines.ingest.incremental_remote",
    "pipelines.ingest.remote",
    "pipelines.localise.fcn_model",
    "pipelines.localise.remote",
    "pipelines.predict.layout",
    "pipelines.predict.remote",
    "pipelines.training.materialise_remote",
    "pipelines.training.networks",
    "pipelines.training.petastorm_input",
    "pipelines.training.remote",
    "pipelines.training.section",
    "pipelines.training.step",
    "pipelines.training.timeline",
    "pipelines.training.trial_remote",
    "pipelines.training.variants",
    "pipelines.training.zoo",
)
