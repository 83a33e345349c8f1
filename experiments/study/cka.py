"""Representational similarity of two feature sets (numpy only): linear CKA, plain and debiased.

cka = linear_cka(features_a_NP, features_b_NQ)             # in [0, 1]; 1: the same up to rotation
"""

import math

import numpy as np


def _gram_frobenius_sq(x: np.ndarray, y: np.ndarray) -> float:
  """||y^T x||_F^2 = trace(x x^T y y^T), through the smaller of the two products."""
  if x.shape[1] * y.shape[1] <= x.shape[0] * x.shape[0]:
    return float(np.sum(np.square(y.T @ x)))
  return float(np.sum((x @ x.T) * (y @ y.T)))


def linear_cka(x_NP: np.ndarray, y_NQ: np.ndarray, debiased: bool = False) -> float:
  """Linear centered kernel alignment (Kornblith et al. 2019) of two feature sets of N examples.

  CKA(X, Y) = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F), columns centred: 1 for the same
  features up to an orthogonal transform and an isotropic scale, about 0 for unrelated features when
  N is large relative to the widths. With few examples and wide features the plain estimate is
  biased upwards; `debiased` uses the unbiased HSIC estimator (Song et al. 2012; Nguyen, Raghu &
  Kornblith 2021), which needs the N x N Gram matrices (subsample N to a few thousand).

  Args:
    x_NP, y_NQ: features [examples, width]; rows must be the same examples in the same order.
  """
  x = np.asarray(x_NP, np.float64).reshape(len(x_NP), -1)
  y = np.asarray(y_NQ, np.float64).reshape(len(y_NQ), -1)
  if len(x) != len(y):
    raise ValueError(f'CKA needs the same examples: got {len(x)} and {len(y)} rows.')
  x = x - x.mean(axis=0)
  y = y - y.mean(axis=0)
  if debiased:
    if len(x) < 4:
      raise ValueError('Debiased CKA needs at least 4 examples.')
    k, l = x @ x.T, y @ y.T
    hsic_kl, hsic_kk, hsic_ll = _unbiased_hsic(k, l), _unbiased_hsic(k, k), _unbiased_hsic(l, l)
    denom = math.sqrt(max(hsic_kk, 0.0) * max(hsic_ll, 0.0))
    return float(hsic_kl / denom) if denom > 0 else float('nan')
  cross = _gram_frobenius_sq(x, y)
  denom = math.sqrt(_gram_frobenius_sq(x, x) * _gram_frobenius_sq(y, y))
  return cross / denom if denom > 0 else float('nan')


def _unbiased_hsic(k: np.ndarray, l: np.ndarray) -> float:
  """Song et al. (2012) unbiased HSIC of Gram matrices [n, n] (diagonals are ignored)."""
  n = len(k)
  k = k - np.diag(np.diag(k))
  l = l - np.diag(np.diag(l))
  ones_k, ones_l = k.sum(axis=0), l.sum(axis=0)
  value = (
    np.sum(k * l)
    + ones_k.sum() * ones_l.sum() / ((n - 1) * (n - 2))
    - 2.0 / (n - 2) * float(ones_k @ ones_l)
  )
  return float(value / (n * (n - 3)))
