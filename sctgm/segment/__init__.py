"""Segmentation of one image: preprocess -> placement/grid -> network -> postprocess -> outputs
(see docs/architecture.md). The package imports nothing heavy; use its modules."""
