"""yolodefect: from labelled defect images to an inline inspection station, on Ultralytics YOLO."""

__version__ = "0.1.0"
