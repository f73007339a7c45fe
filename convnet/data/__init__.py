"""Datasets, preprocessing and batches for training and prediction.

    from convnet.data import load_dataset, train_val_split, Normalization, BatchLoader
    train, val = train_val_split(load_dataset("mnist-5k", "train"), 0.1, seed=0)
    norm = Normalization.fit(train.images)           # statistics of the training set only
    for x, y in BatchLoader(train, 64, shuffle=True, seed=0, normalization=norm):
        ...                                           # x: (64, 1, 28, 28) float32, y: (64,) int64

Datasets hold raw uint8 pixels (N, C, H, W); normalization and augmentation happen per batch.
Every problem with the data raises DataError, whose message says how to fix it.
"""

from convnet.data.augment import augment
from convnet.data.convert import convert_images
from convnet.data.dataset import Dataset, DatasetInfo
from convnet.data.errors import DataError
from convnet.data.images import read_image
from convnet.data.loader import BatchLoader
from convnet.data.normalization import Normalization
from convnet.data.registry import DATASETS, DEFAULT_DATASET, list_datasets, load_dataset
from convnet.data.split import train_val_split

__all__ = [
    "DATASETS", "DEFAULT_DATASET", "BatchLoader", "DataError", "Dataset", "DatasetInfo",
    "Normalization", "augment", "convert_images", "list_datasets", "load_dataset", "read_image",
    "train_val_split",
]
