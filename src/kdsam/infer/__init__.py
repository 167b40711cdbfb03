"""Inference workflows beyond one box on one 2D image: volumes slice by slice, folders of cases
(CVPR24 npz), and everything mode (no prompt)."""
