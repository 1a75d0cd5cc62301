"""Seeded passes keep their own random numbers while other threads draw (model.streams).

On a server, jobs and requests run on threads of one process, and torch has one generator:
a posterior predictive check seeded 0 must draw the same numbers whether or not a DE test
or a training run is drawing on another thread at the same moment.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
import pytest
import torch

from model.streams import Stream, seeded


@pytest.fixture(scope="module")
def fitted(simulated_fit):
    return simulated_fit(n_cells=300, n_genes=60, n_proteins=6, n_batches=2, seed=4)


@contextmanager
def drawing_elsewhere(work: Callable[[], object]) -> Iterator[list[int]]:
    """Run ``work`` over and over on another thread for the block (it seeds and draws);
    yields the list its finished rounds are counted in."""
    stop, rounds = threading.Event(), []

    def loop() -> None:
        while not stop.is_set():
            work()
            rounds.append(1)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield rounds
    finally:
        stop.set()
        thread.join(timeout=60)


def test_a_seeded_pass_draws_the_same_beside_another_threads_passes(fitted) -> None:
    data, model = fitted
    alone = model.posterior_predictive_sample(data, n_samples=2, seed=0, batch_size=32)
    noise = lambda: model.get_normalized_expression(data, n_samples=3, seed=1)  # noqa: E731
    with drawing_elsewhere(noise) as rounds:
        beside = [
            model.posterior_predictive_sample(data, n_samples=2, seed=0, batch_size=32)
            for _ in range(3)
        ]
    assert rounds  # the other thread did draw meanwhile
    for again in beside:
        np.testing.assert_array_equal(again["rna"], alone["rna"])
        np.testing.assert_array_equal(again["protein"], alone["protein"])


def test_training_draws_the_same_beside_another_threads_passes(fitted, simulated_fit) -> None:
    data, model = fitted

    def trained() -> dict[str, torch.Tensor]:
        _, fresh = simulated_fit(n_cells=300, n_genes=60, n_proteins=6, n_batches=2, seed=4)
        fresh.train(max_epochs=2, seed=3, device="cpu", early_stopping=False, precision="32")
        return {k: v.clone() for k, v in fresh.module.state_dict().items()}

    alone = trained()
    noise = lambda: model.posterior_predictive_sample(data, seed=2)  # noqa: E731
    with drawing_elsewhere(noise) as rounds:
        beside = trained()
    assert rounds
    for name, value in alone.items():
        torch.testing.assert_close(beside[name], value, rtol=0, atol=0, msg=name)


def test_interleaved_passes_in_one_thread_keep_their_streams(fitted) -> None:
    """Two iterating passes advanced in turn (a consumer zipping them) draw what each draws
    alone: a minibatch's draws are inside its own turn, the yield outside it."""
    data, model = fitted
    kw = {"n_samples": 2, "batch_size": 64}
    alone_a = list(model.iter_posterior_predictive_sample(data, seed=0, **kw))
    alone_b = list(model.iter_normalized_expression(data, seed=1, **kw))
    zipped = zip(
        model.iter_posterior_predictive_sample(data, seed=0, **kw),
        model.iter_normalized_expression(data, seed=1, **kw),
        strict=True,
    )
    for (a, b), want_a, want_b in zip(zipped, alone_a, alone_b, strict=True):
        assert torch.is_grad_enabled()  # the passes turn gradients off in their turns only
        for got, want in ((a, want_a), (b, want_b)):
            for part_got, part_want in zip(got, want, strict=True):
                np.testing.assert_array_equal(part_got, part_want)
    assert torch.is_grad_enabled()  # as before the passes (training would fail otherwise)


def test_an_abandoned_pass_leaves_gradients_on(fitted) -> None:
    data, model = fitted
    parts = model.iter_normalized_expression(data, seed=0, batch_size=64)
    next(parts)  # suspended mid-pass, never finished
    assert torch.is_grad_enabled()
    parts.close()


def test_a_stream_is_torch_manual_seed_and_leaves_the_generator_as_it_was() -> None:
    torch.manual_seed(11)
    want = torch.rand(5), torch.randn(3)
    torch.manual_seed(99)
    before = torch.random.get_rng_state()
    stream = Stream(11)
    with stream.turn():
        first = torch.rand(5)
    assert torch.equal(torch.random.get_rng_state(), before)  # untouched between turns
    with stream.turn():  # the next turn goes on where the last ended
        second = torch.randn(3)
    assert torch.equal(first, want[0]) and torch.equal(second, want[1])
    assert torch.equal(torch.random.get_rng_state(), before)
    # a stream from the current state (seed None) draws what the generator would have
    with Stream(None).turn():
        from_current = torch.rand(4)
    assert torch.equal(from_current, torch.rand(4))


def test_seeded_blocks_and_nested_turns() -> None:
    with seeded(5):
        a = torch.rand(3)
        with seeded(6):  # a turn inside a turn: the inner stream, then the outer again
            inner = torch.rand(2)
        b = torch.rand(3)
    torch.manual_seed(5)
    assert torch.equal(a, torch.rand(3)) and torch.equal(b, torch.rand(3))
    torch.manual_seed(6)
    assert torch.equal(inner, torch.rand(2))
