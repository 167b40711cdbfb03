"""Inference workflows built on `KDSamPredictor`: whole images without prompts, volumes, folders."""
