"""The Prefect flows: the DAG read from dvc.yaml, new data, monitoring, and their deployments.
They import the library only (and each other), never an app or a stage."""
