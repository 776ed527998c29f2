"""Evaluation and gating: metrics, entity scores, slices, intervals, the gate's rules and its report."""
