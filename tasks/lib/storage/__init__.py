"""Registry and storage: model versions, object stores, the team workspace, retention, lineage, model
cards."""
