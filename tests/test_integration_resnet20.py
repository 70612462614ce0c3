"""The real thing: bundled CIFAR-10 ResNet20 weights on the bundled CIFAR-10 parquet files."""

import pytest
from conftest import requires_shared

from hf_decomp import analyze

pytestmark = [pytest.mark.slow, requires_shared("data", "cifar10"), requires_shared("models", "cifar10-resnets")]


def test_resnet20_reproduces_published_accuracy_and_the_papers_decomposition(tmp_path):
    # Full test split (10k images) for the published accuracy; statistics from a 10k train subset
    # to keep the test short (the full-split numbers are in the README: 88.72 %, rho 0.967).
    result = analyze("cifar10_resnet20", k1=5, k2=5, limit=10_000, out=tmp_path / "r20")
    m = result.metrics
    assert m["evaluation"]["eval_samples"] == 10_000
    # Deterministic (content-seeded noise, fixed subset seed): +-0.1 point bands, exact index sets.
    assert m["full_accuracy"] == pytest.approx(91.73, abs=0.05)  # published ResNet20 accuracy
    assert m["decomposed_accuracy"] == pytest.approx(88.72, abs=0.1)  # paper: 88.59 % from its 91.17 %
    assert m["rho"] == pytest.approx(0.9672, abs=0.001)
    noise = m["noise_ablation"]
    assert noise["influential_to_noise_accuracy"] == pytest.approx(49.95, abs=0.1)
    assert noise["non_influential_to_noise_accuracy"] == pytest.approx(84.42, abs=0.1)
    assert [sorted(s) for s in result.indices.sets] == [
        [7, 22, 23, 50, 54], [2, 6, 9, 40, 55], [1, 13, 23, 53, 61], [17, 49, 53, 57, 59], [25, 46, 48, 57, 61],
        [10, 13, 37, 42, 49], [9, 39, 48, 56, 61], [0, 16, 25, 53, 56], [2, 9, 21, 22, 29], [8, 21, 40, 54, 55]]
    assert m["multiply_adds"] == {"full": 640, "decomposed": 50, "ratio": 50 / 640}
    assert all(len(s) == 5 for s in result.indices.sets)
