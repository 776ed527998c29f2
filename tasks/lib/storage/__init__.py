"""Registry and storage: model versions, object stores, the team workspace, retention, model cards."""
