"""The shared library: everything stages, apps and flows have in common. It imports no stage, no flow
and no app.

A small core (config, recipes, errors, io, artifacts, columns, metric_names, stage_runner) and one
subpackage per concern, in the pipeline's order: data, validation, augmentation, training,
evaluation, export, inference, storage, monitoring, reporting (docs/concepts/floor-plan.md).
"""
