"""Seeded random streams that stay each pass's own while several threads draw at once.

torch draws every sample from one generator per device, shared by all threads. A pass that
seeds it and draws minibatch after minibatch (a posterior predictive check, a DE test, a
training run) gets other numbers as soon as another thread seeds or draws in between: on a
server whose jobs and requests run on threads, the same cached result would then depend on
what else was running, and no longer equal scvi-tools' draws. A :class:`Stream` keeps its
own generator state and draws only during a :meth:`Stream.turn`: under one process-wide
lock, its state is put on the generator for the turn and taken off after it, and whatever
was there before is put back. One turn per minibatch, so a short request never waits for a
whole pass of another thread. Alone, a pass draws exactly the numbers it drew before (the
seeding and the draws are the same calls on the same generator).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch

#: Held during every turn and while a stream is seeded (re-entrant: a turn inside a turn of
#: the same thread puts the inner stream on, then the outer back).
_LOCK = threading.RLock()


def _states(device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The CPU generator's state and, on CUDA, the device's."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.random.get_rng_state(), cuda


def _put(device: torch.device, states: tuple[torch.Tensor, torch.Tensor | None]) -> None:
    torch.random.set_rng_state(states[0])
    if states[1] is not None:
        torch.cuda.set_rng_state(states[1], device)


class Stream:
    """A random stream of its own: seeded ``seed`` (``None``: from the generator's current
    state, which stays as it was), drawn on during :meth:`turn`.

    Parameters
    ----------
    seed
        As ``torch.manual_seed`` (the CPU generator and, for ``device`` CUDA, its own).
    device
        The device whose generator the draws use besides the CPU's.
    """

    def __init__(self, seed: int | None, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        with _LOCK:
            before = _states(self.device)
            if seed is not None:
                torch.random.manual_seed(seed)
                if self.device.type == "cuda":
                    torch.cuda.manual_seed(seed)
            self._states = _states(self.device)
            _put(self.device, before)

    @contextlib.contextmanager
    def turn(self) -> Iterator[None]:
        """Draw on this stream inside the block (other threads' turns wait; keep the block
        to one minibatch); the generator is back as it was after it."""
        with _LOCK:
            before = _states(self.device)
            _put(self.device, self._states)
            try:
                yield
            finally:
                self._states = _states(self.device)
                _put(self.device, before)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """One short block on a stream seeded ``seed`` (e.g. a module's seeded initial weights):
    :class:`Stream` and one :meth:`Stream.turn`."""
    with Stream(seed, device).turn():
        yield
