"""experiments/study/cka.py: linear CKA, plain and debiased."""

import numpy as np
import pytest

from experiments.study import cka


def test_cka_identity_orthogonal_and_scale_invariance_and_independence():
  rng = np.random.default_rng(5)
  x = rng.normal(size=(400, 20)) @ rng.normal(size=(20, 20))  # Correlated features.
  q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
  assert cka.linear_cka(x, x) == pytest.approx(1.0)
  assert cka.linear_cka(x, 3.7 * x @ q) == pytest.approx(1.0)
  assert cka.linear_cka(x, x + 5.0) == pytest.approx(1.0)  # Centred: offsets do not matter.
  assert cka.linear_cka(x, rng.normal(size=(400, 10))) < 0.1
  assert cka.linear_cka(x, x[:, :5]) < 1.0  # A subset of the features is less than identical.


def test_cka_wide_features_use_the_gram_form_and_debiasing_removes_the_bias():
  rng = np.random.default_rng(6)
  x, y = rng.normal(size=(200, 1_000)), rng.normal(size=(200, 300))  # Wider than N.
  plain = cka.linear_cka(x, y)
  xc, yc = x - x.mean(0), y - y.mean(0)
  direct = np.sum((yc.T @ xc) ** 2) / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
  assert plain == pytest.approx(direct)
  assert plain > 0.5  # Independent but wide: the plain estimate is strongly biased upwards.
  assert abs(cka.linear_cka(x, y, debiased=True)) < 0.05
  assert cka.linear_cka(x, 2 * x, debiased=True) == pytest.approx(1.0)
