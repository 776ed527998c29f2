"""The DVC stages, one module each: `python -m tasks.stages.<name>`. A stage imports the library, never another stage."""
