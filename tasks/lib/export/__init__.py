"""Export and serving variants: ONNX export, pruning, quantized variants and their measurement."""
