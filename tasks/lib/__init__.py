"""The shared library: everything stages, apps and flows have in common. It imports no stage and no app."""
