"""Inference without torch: ONNX Runtime / OpenVINO classifiers and taggers, the production model."""
