"""The DVC stages, one module each: `python -m tasks.stages.<name>`. Each imports the library, never another stage."""
