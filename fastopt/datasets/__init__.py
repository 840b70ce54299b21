"""Small real datasets shipped inside the package (no download at run time).

``load_digits()``: the UCI "Optical Recognition of Handwritten Digits" test set, 1,797
8x8 images of the digits 0-9 with pixel counts 0..16 (E. Alpaydin and C. Kaynak, 1998;
UCI Machine Learning Repository, https://doi.org/10.24432/C50P49, licensed CC BY 4.0).
Stored as ``digits.npz`` (45 KB): ``images`` uint8 (1797, 8, 8), ``labels`` uint8 (1797,).
See ``DIGITS.md`` beside this file for the source and licence.
"""

from __future__ import annotations

from importlib import resources

import numpy as np


def load_digits(dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """``(images, labels)``: images scaled to [0, 1] as ``dtype`` (1797, 8, 8), labels int64."""
    if np.dtype(dtype).kind != "f":
        raise TypeError(f"load_digits: dtype must be a float dtype (the images are scaled to "
                        f"[0, 1]), got {np.dtype(dtype)}")
    with resources.files(__package__).joinpath("digits.npz").open("rb") as f:
        data = np.load(f)
        images, labels = data["images"], data["labels"]
    return (images / np.float32(16.0)).astype(dtype), labels.astype(np.int64)
