"""What a frame looks like, in a few numbers: the features a drift monitor compares with a reference profile.

Brightness and contrast (mean and standard deviation of the grey levels), sharpness (variance of the
Laplacian, the usual focus measure) and the mean of each channel. Computed on the image scaled so its
longer side is at most ``STATS_SIDE_PX`` pixels: a few milliseconds per frame, and the same scale for a
dataset's images (the profile ``eval`` writes) and the station's frames, so sharpness compares like with like.
"""

from __future__ import annotations

import cv2
import numpy as np

STATS_SIDE_PX = 320
IMAGE_FEATURES = ("brightness", "contrast", "sharpness", "mean_b", "mean_g", "mean_r")


def image_statistics(image_bgr: np.ndarray) -> dict[str, float]:
    """The :data:`IMAGE_FEATURES` of a BGR (or grey) uint8 image."""
    image = image_bgr
    height, width = image.shape[:2]
    scale = STATS_SIDE_PX / max(height, width)
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    if image.ndim == 2:
        grey, channels = image, np.repeat(float(image.mean()), 3)
    else:
        grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        channels = image.reshape(-1, image.shape[2])[:, :3].mean(axis=0)
    return {
        "brightness": float(grey.mean()),
        "contrast": float(grey.std()),
        "sharpness": float(cv2.Laplacian(grey, cv2.CV_64F).var()),
        "mean_b": float(channels[0]),
        "mean_g": float(channels[1]),
        "mean_r": float(channels[2]),
    }
