"""Runtime-specific helpers (PyTorch, ONNX Runtime) behind the engine's runtime-neutral code."""
