"""Streaming neuron-label correlations against the full-matrix computation."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy.special import softmax

from pipeline.explain.neurons import NeuronAccumulator, neuron_softmax


def job(n_scans: int, n_neurons: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return softmax neuron vectors and 0/1 labels in which some neurons follow the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n_scans)
    gap = rng.normal(size=(n_scans, n_neurons))
    gap[:, 0] += 2.0 * labels  # goes with tumor
    gap[:, 1] -= 1.5 * labels  # goes against it
    return neuron_softmax(gap), labels


def in_batches(vectors, labels, sizes) -> list[NeuronAccumulator]:
    edges = np.cumsum([0, *sizes])
    return [NeuronAccumulator(vectors.shape[1]).update(vectors[a:b], labels[a:b])
            for a, b in zip(edges[:-1], edges[1:])]


@pytest.mark.parametrize("n_scans, n_neurons, batch", [(50, 8, 7), (300, 64, 16), (1000, 512, 128)])
def test_streamed_correlations_equal_corrcoef_on_the_full_matrix(n_scans, n_neurons, batch):
    vectors, labels = job(n_scans, n_neurons)
    accumulator = NeuronAccumulator(n_neurons)
    for start in range(0, n_scans, batch):
        accumulator.update(vectors[start:start + batch], labels[start:start + batch])
    expected = np.corrcoef(np.column_stack([vectors, labels]), rowvar=False)[-1, :-1]
    np.testing.assert_allclose(accumulator.correlations(), expected, atol=1e-6)
    assert accumulator.n_scans == n_scans


def test_merging_in_any_order_gives_the_same_result():
    vectors, labels = job(240, 32, seed=3)
    parts = in_batches(vectors, labels, [10, 90, 1, 39, 100])
    whole = NeuronAccumulator(32).update(vectors, labels).correlations()
    for order in itertools.permutations(range(len(parts))):
        merged = NeuronAccumulator(32)
        for k in order:
            merged.merge(NeuronAccumulator.from_bytes(parts[k].to_bytes()))
        np.testing.assert_allclose(merged.correlations(), whole, rtol=0, atol=1e-12)
        assert merged.n_scans == 240


def test_class_means_and_the_strongest_neurons_of_each_sign():
    vectors, labels = job(400, 16, seed=5)
    result = NeuronAccumulator(16).update(vectors, labels).result(top=3)
    assert result.top_positive[0].neuron == 0 and result.top_negative[0].neuron == 1
    # Softmax makes neurons compete: when neuron 0 rises the others fall, so few stay positive.
    corr = result.correlations
    assert [r.neuron for r in result.top_positive] == [int(i) for i in np.argsort(-corr)[:3] if corr[i] > 0]
    assert [r.neuron for r in result.top_negative] == [int(i) for i in np.argsort(corr)[:3]]
    assert all(r.correlation < 0 for r in result.top_negative)
    first = result.top_positive[0]
    assert first.mean_tumor == pytest.approx(vectors[labels == 1, 0].mean())
    assert first.mean_no_tumor == pytest.approx(vectors[labels == 0, 0].mean())
    np.testing.assert_allclose(result.class_means["no_tumor"], vectors[labels == 0].mean(axis=0))
    assert result.counts == {"no_tumor": int(np.sum(labels == 0)), "tumor": int(np.sum(labels == 1))}
    assert result.defined and result.n_scans == 400
    summary = json.loads(json.dumps(result.summary()))
    assert summary["top_positive"][0]["neuron"] == 0 and summary["correlation_defined"] is True


def test_constant_neurons_correlate_zero_not_nan():
    vectors, labels = job(100, 6)
    vectors[:, 2] = 0.25
    vectors[:, 4] = 0.0
    correlations = NeuronAccumulator(6).update(vectors, labels).correlations()
    assert correlations[2] == 0 and correlations[4] == 0
    assert np.isfinite(correlations).all() and abs(correlations[0]) > 0.3


def test_a_single_class_gives_zeros_and_says_correlation_is_undefined():
    vectors, _ = job(40, 8)
    result = NeuronAccumulator(8).update(vectors, np.ones(40, int)).result()
    assert not result.defined
    assert np.array_equal(result.correlations, np.zeros(8))
    assert result.top_positive == [] and result.top_negative == []
    assert list(result.class_means) == ["tumor"] and result.counts == {"no_tumor": 0, "tumor": 40}
    assert NeuronAccumulator(8).result().defined is False  # and with no scans at all


def test_bytes_round_trip_and_are_deterministic():
    vectors, labels = job(60, 10)
    first = NeuronAccumulator(10).update(vectors, labels)
    second = NeuronAccumulator(10).update(vectors, labels)
    assert first.to_bytes() == second.to_bytes()
    again = NeuronAccumulator.from_bytes(first.to_bytes())
    assert np.array_equal(again.sums, first.sums) and np.array_equal(again.squares, first.squares)
    assert np.array_equal(again.counts, first.counts)
    assert again.to_bytes() == first.to_bytes()


def test_softmax_over_neurons_is_stable_and_sums_to_one():
    gap = np.array([[1000.0, 1001.0, 999.0], [0.0, 0.0, 0.0]])
    out = neuron_softmax(gap)
    np.testing.assert_allclose(out, softmax(gap, axis=1))
    np.testing.assert_allclose(out.sum(axis=1), 1.0)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("vectors, labels, message", [
    (np.zeros((3, 4)), np.array([0, 1, 2]), "labels must be 1 \\(tumor\\) or 0"),
    (np.zeros((3, 5)), np.array([0, 1, 1]), "expected \\(3, 4\\) vectors"),
    (np.zeros((3, 4)), np.array([0, 1]), "expected \\(2, 4\\) vectors"),
    (np.full((2, 4), np.nan), np.array([0, 1]), "NaN or infinite"),
])
def test_bad_batches_are_refused_in_words_and_change_nothing(vectors, labels, message):
    accumulator = NeuronAccumulator(4)
    with pytest.raises(ValueError, match=message):
        accumulator.update(vectors, labels)
    assert accumulator.n_scans == 0 and not accumulator.sums.any()


def test_mismatched_merges_and_foreign_bytes_are_refused():
    with pytest.raises(ValueError, match="cannot merge statistics of 3 neurons into statistics of 4"):
        NeuronAccumulator(4).merge(NeuronAccumulator(3))
    with pytest.raises(ValueError, match="not saved neuron statistics"):
        NeuronAccumulator.from_bytes(b"PK not an archive")
    with pytest.raises(ValueError, match="at least one neuron"):
        NeuronAccumulator(0)
    with pytest.raises(ValueError, match="\\(N, C\\) array"):
        neuron_softmax(np.zeros(5))
