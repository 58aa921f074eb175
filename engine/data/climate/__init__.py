"""Synthetic and real ExtremeWeather data (Racah et al., NeurIPS 2017) for the climate workload.

    from engine.data.climate import generate, load_extremeweather, ExtremeWeatherFile
    generate("data/climate", train=1000, test=200, labeled_fraction=0.1, seed=1)
    d = load_extremeweather("data/climate/train.h5")   # images, boxes, labeled, stats

Modules: physics (constants, grid, climatology, Holland vortex, noise), generator (events and
images), io (the HDF5 layout: writer and loader), pipeline (whole splits), cli (`crema data
climate`).
"""
from .generator import CLASSES, MAX_BOXES, VARIABLES, UNITS, CHANNEL, Config, generate_image
from .io import ExtremeWeatherFile, load_extremeweather, normalize, stats_of, write_extremeweather
from .pipeline import generate, generate_split, labeled_mask

__all__ = ["CLASSES", "MAX_BOXES", "VARIABLES", "UNITS", "CHANNEL", "Config", "generate_image",
           "ExtremeWeatherFile", "load_extremeweather", "normalize", "stats_of",
           "write_extremeweather", "generate", "generate_split", "labeled_mask"]
