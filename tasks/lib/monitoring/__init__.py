"""Monitoring the served model: the prediction log, reference profiles, traffic checks, their report."""
