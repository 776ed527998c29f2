"""Helpers the tests import: the repo, its params and copies, and real servers on loopback."""
