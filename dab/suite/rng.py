"""Random streams that are functions of (seed, step) alone, so a resumed run sees exactly the
batches, orders and augmentations an uninterrupted one would, without saved RNG state."""
from __future__ import annotations

import torch


def step_generator(seed: int, step: int, device: torch.device | str, salt: int = 0) -> torch.Generator:
    """A generator whose state depends only on (seed, step) and ``salt`` (a stream offset)."""
    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + step + salt) % (2**63))


class EpochOrder:
    """Indices of the training batch at each step: every epoch a fresh permutation of ``size``
    items drawn on ``device`` from (seed, epoch); ``size // batch_size`` batches an epoch (the last
    partial batch is dropped). ``salt`` moves the draw to another stream: the classifier uses
    2**40 because its crop/flip draws already use ``step_generator(seed, step)``, whose stream for
    step = e would otherwise equal epoch e's order."""

    def __init__(self, size: int, batch_size: int, seed: int, device: torch.device | str, salt: int = 0):
        self.size, self.batch_size, self.seed, self.device, self.salt = size, batch_size, seed, device, salt
        self.per_epoch = max(1, size // batch_size)
        self._epoch, self._perm = None, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            gen = step_generator(self.seed, epoch, self.device, self.salt)
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=gen, device=self.device)
        return self._perm[i * self.batch_size:(i + 1) * self.batch_size]
