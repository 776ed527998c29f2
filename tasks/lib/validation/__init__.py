"""Validation of labelled text: derived columns, Great Expectations suites, drift, the readable report."""
