"""`sparkcnn transfer`: pretrained features (featurizers/) + Spark LogisticRegression, as one PipelineModel."""
