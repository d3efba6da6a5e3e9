"""Dataset readers and generators for medical image classification benchmarks."""
