"""Every random number of a run, as a pure function of (stream, seed, position).

Nothing is drawn from a generator that lives across steps, so nothing is lost when a run stops:
a resumed run (or one with another worker or process count) draws the same numbers at the
same place. Each kind of randomness has its own stream, so no two kinds share numbers.
"""

from __future__ import annotations

from collections.abc import Iterator

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


class GeneratorBatch:
    """`generator(stream, *keys, i)` for every i of `last`, computed together: a loader draws
    each image's augmentation from its own generator, and making NumPy generators one by one
    cost 5% of the images' decode (docs/benchmarks.md, "The loader's GPU path").

    The same numbers, not an approximation: NumPy's SeedSequence hashing (pool of 4 words)
    and PCG64 (128-bit LCG, XSL-RR output) written over arrays, checked against NumPy in
    tests/test_augment.py. Only keys that are each one 32-bit word qualify (`fits`).
    """

    _POOL = 4  # SeedSequence's default pool size: every key must be one word so that
    # (stream, *keys, i) is exactly the pool, which is what `fits` checks

    def __init__(self, stream: int, keys: tuple[int, ...], last: np.ndarray):
        if len(keys) != self._POOL - 2:
            raise ValueError(f"GeneratorBatch takes {self._POOL - 2} keys before the last, not {len(keys)}")
        state = _seed_words([stream, *keys, np.asarray(last, np.uint64)])
        seed_hi, seed_lo, inc_hi, inc_lo = (state[2 * k] | (state[2 * k + 1] << _32) for k in range(4))
        # pcg_setseq_128_srandom_r: inc = 2 * initseq + 1; state = ((0 * M + inc) + initstate) * M + inc
        one = np.uint64(1)
        self.inc = ((inc_hi << one) | (inc_lo >> np.uint64(63)), (inc_lo << one) | one)
        self.state = self._step(_add128(self.inc, (seed_hi, seed_lo)))
        self._one = np.random.Generator(np.random.PCG64(0))  # reused: see `generators`

    @staticmethod
    def fits(stream: int, keys: tuple[int, ...], last: np.ndarray) -> bool:
        values = [stream, *keys]
        return (
            len(values) == GeneratorBatch._POOL - 1
            and all(0 <= v < 1 << 32 for v in values)
            and (len(last) == 0 or (int(np.min(last)) >= 0 and int(np.max(last)) < 1 << 32))
        )

    def _step(self, state: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return _add128(_mul128(state, _PCG_MULT), self.inc)

    def next_uint64(self) -> np.ndarray:
        """Every generator's next 64-bit output (PCG64's next64: step, then XSL-RR)."""
        self.state = self._step(self.state)
        hi, lo = self.state
        rot = hi >> np.uint64(58)
        v = hi ^ lo
        return (v >> rot) | (v << ((np.uint64(64) - rot) & np.uint64(63)))

    def generators(self) -> Iterator[np.random.Generator]:
        """Each generator in turn at its current position, as NumPy would have it after drawing
        only whole 64-bit outputs. One object is reused (setting a state costs a seventh of
        making a generator): each is valid until the next is taken."""
        incs = [hi << 64 | lo for hi, lo in zip(*(half.tolist() for half in self.inc), strict=True)]
        states = [hi << 64 | lo for hi, lo in zip(*(half.tolist() for half in self.state), strict=True)]
        bit_generator = self._one.bit_generator
        for state, inc in zip(states, incs, strict=True):
            bit_generator.state = {
                "bit_generator": "PCG64",
                "state": {"state": state, "inc": inc},
                "has_uint32": 0,
                "uinteger": 0,
            }
            yield self._one


_M32 = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)
_PCG_MULT = (np.uint64(0x2360ED051FC65DA4), np.uint64(0x4385DF649FCCF645))  # PCG_DEFAULT_MULTIPLIER_128


def _seed_words(entropy: list) -> list[np.ndarray]:
    """SeedSequence(entropy).generate_state(8, np.uint32), one word per array element; entries
    of `entropy` are ints (the same for every element) or uint64 arrays. The hash constants
    evolve alike whatever the entropy, so they stay ints."""
    hash_a = 0x43B0D7E5

    def hashmix(value):
        nonlocal hash_a
        value = value ^ hash_a
        hash_a = hash_a * 0x931E8875 & 0xFFFFFFFF
        value = value * hash_a & 0xFFFFFFFF
        return value ^ (value >> 16)

    def mix(x, y):
        r = (0xCA01F9DD * x + (1 << 32) - (0x4973F715 * y & 0xFFFFFFFF)) & 0xFFFFFFFF  # never below 0
        return r ^ (r >> 16)

    pool = [hashmix(e) for e in entropy]
    for src in range(len(pool)):
        for dst in range(len(pool)):
            if src != dst:
                pool[dst] = mix(pool[dst], hashmix(pool[src]))
    hash_b, out = 0x8B51F9DD, []
    for k in range(8):
        value = pool[k % len(pool)] ^ hash_b
        hash_b = hash_b * 0x58F38DED & 0xFFFFFFFF
        value = value * hash_b & 0xFFFFFFFF
        out.append(np.asarray(value ^ (value >> 16), np.uint64))
    return out


def _add128(a, b):
    lo = a[1] + b[1]
    return a[0] + b[0] + (lo < a[1]).astype(np.uint64), lo


def _mul128(a, b):
    """a * b mod 2**128 on (high, low) uint64 pairs."""
    a0, a1, b0, b1 = a[1] & _M32, a[1] >> _32, b[1] & _M32, b[1] >> _32
    p00, p01, p10 = a0 * b0, a0 * b1, a1 * b0
    mid = (p00 >> _32) + (p01 & _M32) + (p10 & _M32)
    lo = (mid << _32) | (p00 & _M32)
    hi = a1 * b1 + (p01 >> _32) + (p10 >> _32) + (mid >> _32)
    return hi + a[0] * b[1] + a[1] * b[0], lo
