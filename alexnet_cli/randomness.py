"""Every random number of a run, as a pure function of (stream, seed, position).

Nothing is drawn from a generator that lives across steps, so nothing is lost when a run stops:
a resumed run (or one with another worker or process count) draws the same numbers at the
same place. Each kind of randomness has its own stream, so no two kinds share numbers.
"""

from __future__ import annotations

import numpy as np

AUGMENT = 1  # each image's crop, reflection and lighting: (seed, epoch, image index), section 4.1
ORDER = 2  # the epoch's order of the training images: (seed, epoch)
INIT = 3  # the initial weights: (seed,), the same on every rank
DROPOUT = (
    4  # dropout masks: (seed, epoch, step, layer), drawn over the whole global batch (model.DropoutMasks)
)


def generator(stream: int, *keys: int) -> np.random.Generator:
    """A NumPy generator seeded by (stream, *keys) alone."""
    return np.random.default_rng((stream, *keys))


def torch_seed(stream: int, *keys: int) -> int:
    """A 64-bit seed for torch.manual_seed that is a pure function of (stream, *keys)."""
    return int(np.random.SeedSequence((stream, *keys)).generate_state(1, np.uint64)[0])
