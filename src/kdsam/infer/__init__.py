"""Inference beyond one 2D image: 3D volumes slice by slice, and folders of cases (CVPR24 npz)."""
