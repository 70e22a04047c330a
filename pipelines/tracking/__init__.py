"""MLflow tracking around any command (`--set tracking.mlflow=true`)."""
