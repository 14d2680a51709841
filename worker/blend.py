"""Colour geometry of a semi-transparent overlay, shared by the mask and the
logo finder.

Over a photo, an overlay of one colour at opacity ``a`` moves every pixel the
same fraction of the way from the photo toward that colour:

    observed = a * colour + (1 - a) * photo

Over a background of one colour the fraction and the colour trade off (a
faint green and a strong dark green look alike); the purest colour the change
could be heading for, where its ray leaves the RGB cube, breaks the tie, and
the mode of those exits over many pixels is the overlay's colour.
"""

from __future__ import annotations

import numpy as np


def alpha_towards(change: np.ndarray, photo: np.ndarray, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, cosine), float32 (the shape of ``change`` less its last axis):
    the fraction of the way from ``photo`` to ``colour`` the ``change`` goes,
    and how well their directions agree."""
    diff = colour - photo
    norm2 = np.maximum((diff * diff).sum(axis=-1), 1e-4)
    dot = (change * diff).sum(axis=-1)
    cos = dot / np.sqrt(norm2 * np.maximum((change * change).sum(axis=-1), 1e-8))
    return dot / norm2, cos


def exit_colour(change: np.ndarray, photo: np.ndarray) -> np.ndarray:
    """Where each ray ``photo + t * change`` (N x 3, t > 0) leaves the unit
    cube: the purest colour the change can be heading for."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(change > 0, (1 - photo) / change, np.where(change < 0, -photo / change, np.inf)).min(axis=1)
    return np.clip(photo + np.nan_to_num(t, posinf=0.0)[:, None] * change, 0, 1)


def exit_modes(change: np.ndarray, photo: np.ndarray, count: int, least: int = 15) -> list[np.ndarray]:
    """The ``count`` most common gamut exits of ``change`` from ``photo``
    (N x 3 each), binned at 6 levels a channel, as the median exit of each bin
    holding at least ``least`` pixels, most common first."""
    exits = exit_colour(change, photo)
    bins = np.clip((exits * 5.999).astype(int), 0, 5) @ np.array([36, 6, 1])
    counts = np.bincount(bins, minlength=216)
    return [np.median(exits[bins == b], axis=0).astype(np.float32)
            for b in np.argsort(-counts)[:count] if counts[b] >= least]
