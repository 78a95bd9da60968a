"""Building blocks of ``yolodefect export``: format table, calibration, INT8 quantization, latency, gate, card.

The entry point is :func:`yolodefect.export.export`.
"""
