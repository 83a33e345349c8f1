"""Use a trained run: load its parameters and predict on raw inputs, without the dataset.

  model = hybrid_jax.load('workdirs/text', checkpoint='best')     # or 'latest', or a step
  out = model.predict(['Shares fell as oil prices rose.', 'The striker scored twice.'])
  out.labels                 # ['business', 'sports']
  out.probabilities          # float32 [2, num_classes], columns model.label_names
  model.embed(texts)         # {'cnn': float32 [N, d_cnn], 'lstm': float32 [N, d_lstm]}
  model.predict(texts, zero_branches=('lstm',))   # the LSTM's features zeroed before the head
  model.apply_head({'cnn': ..., 'lstm': ...})     # the head on given branch features

Regression runs return `out.values` float64 [N] in the target's original units (e.g. °F).

What inference needs is written when training starts, to `<workdir>/inference.json` (`save_spec`):
the resolved config, the task, the head (label names, or the target's mean and std), and per input
kind what turns raw inputs into model batches (text vocabulary and tokenizer settings, sensor
normalisation statistics, input shapes; see `raw_inputs`). `load` reads that file and only the
`params` of one checkpoint (an orbax partial restore: no optimizer state is read or built), so the
prepared dataset, the builder module and the config file are not needed, and the workdir can move.

Predictions run jit-compiled on fixed-size batches (the last one padded), data-parallel over the
given devices (default: this process's devices), so repeated calls with the same `batch_size`
compile once.
"""

import dataclasses
import hashlib
import json
import os
from typing import Any, Mapping, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from hybrid_jax import ablation
from hybrid_jax import checkpoints
from hybrid_jax import fileio
from hybrid_jax import heads
from hybrid_jax import input_kinds
from hybrid_jax import orbax_logs
from hybrid_jax import parallel
from hybrid_jax import population
from hybrid_jax import raw_inputs
from hybrid_jax import steps
from hybrid_jax.errors import CheckpointError, InputError
from hybrid_jax.models import fusion

SPEC_FILE = 'inference.json'
FORMAT = 'hybrid_jax.inference'
VERSION = 1  # Bump when a reader of the previous version would misread a new file.


# ------------------------------------------------------------------------------- inference.json


def build_spec(source) -> dict[str, Any]:
  """Everything inference needs from a run's resolved dataset (`datasets.Source`), JSON-able."""
  config, info = source.config, source.info
  head = {'kind': info.head, 'label_names': list(info.label_names)}
  if heads.head(info.head).regression:
    head.update(target_mean=float(info.target_mean), target_std=float(info.target_std))
  return {
    'format': FORMAT,
    'version': VERSION,
    'task': config.task,
    'dataset': config.dataset.name,
    'config': json.loads(config.to_json_best_effort()),
    'head': head,
    'input': raw_inputs.describe(source),
  }


def _checksum(spec: Mapping[str, Any]) -> str:
  body = {k: v for k, v in spec.items() if k != 'sha256'}
  return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def save_spec(workdir: str, spec: dict[str, Any]) -> str:
  """Writes `spec` (from `build_spec`) as `<workdir>/inference.json`, atomically, with its checksum.

  Returns the file's path.
  """
  spec = dict(spec)
  spec['sha256'] = _checksum(spec)
  path = os.path.join(workdir, SPEC_FILE)
  fileio.write_json(path, spec, indent=None)
  return path


def read_spec(workdir: str) -> dict[str, Any]:
  """The checked contents of `<workdir>/inference.json`, or a one-line CheckpointError."""
  path = os.path.join(os.path.abspath(workdir), SPEC_FILE)
  if not os.path.isfile(path):
    if not os.path.isdir(workdir):
      raise CheckpointError(
        f'No run directory {os.path.abspath(workdir)}: point --workdir at a trained run.'
      )
    raise CheckpointError(
      f'{path} is missing: {workdir} is not a run trained by this hybrid_jax '
      '(or one from before runs saved it); train it with the same --workdir, '
      'which writes the file and resumes from the checkpoints.'
    )
  try:
    with open(path, encoding='utf-8') as f:
      spec = json.load(f)
  except (OSError, ValueError) as e:
    raise CheckpointError(
      f'{path} cannot be read ({e}): it is damaged; re-run training with the '
      'same --workdir to rewrite it.'
    ) from None
  if not isinstance(spec, dict) or spec.get('format') != FORMAT:
    raise CheckpointError(f'{path} is not a hybrid_jax inference file.')
  version = spec.get('version')
  if not isinstance(version, int) or version > VERSION:
    raise CheckpointError(
      f'{path} was written by a newer hybrid_jax (inference format {version}; '
      f'this one reads up to {VERSION}): upgrade hybrid_jax to use this run.'
    )
  if spec.get('sha256') != _checksum(spec):
    raise CheckpointError(
      f'{path} does not match its checksum (edited or damaged): re-run '
      'training with the same --workdir to rewrite it.'
    )
  if (
    spec['task'] not in input_kinds.INPUT_KINDS
    or spec['input'].get('tokenizer') != raw_inputs.TOKENIZER
    or spec['head']['kind'] not in heads.HEADS
  ):
    raise CheckpointError(
      f"{path} describes a {spec['task']} run this hybrid_jax cannot read "
      '(another input kind, head or tokenizer): upgrade hybrid_jax.'
    )
  return spec


# ---------------------------------------------------------------------------------- predictions


@dataclasses.dataclass(frozen=True)
class Predictions:
  """Predictions for N inputs.

  Attributes:
    label_names: class names by id (classification), () for regression.
    logits: float32 [N, classes] (classification), else None.
    probabilities: float32 [N, classes], softmax of the logits (classification), else None.
    values: float64 [N] in the target's original units (regression), else None.
  """

  label_names: tuple[str, ...]
  logits: Optional[np.ndarray] = None
  probabilities: Optional[np.ndarray] = None
  values: Optional[np.ndarray] = None

  def __len__(self) -> int:
    return len(self.values if self.values is not None else self.logits)

  @property
  def label_ids(self) -> np.ndarray:
    """int [N]: the arg-max class of each input (as the eval accuracy counts it)."""
    return np.argmax(self.logits, axis=-1)

  @property
  def labels(self) -> list[str]:
    """The predicted class name of each input."""
    return [self.label_names[i] for i in self.label_ids]

  def rows(self) -> list[dict[str, Any]]:
    """One JSON-able dict per input: {'label', 'probabilities': {name: p}} or {'value'}."""
    if self.values is not None:
      return [{'value': float(v)} for v in self.values]
    return [
      {'label': label, 'probabilities': dict(zip(self.label_names, map(float, p)))}
      for label, p in zip(self.labels, self.probabilities)
    ]


# -------------------------------------------------------------------------------- trained model


def load(
  workdir: str,
  checkpoint: Union[str, int] = 'best',
  devices: Optional[Sequence[Any]] = None,
  member: Optional[int] = None,
) -> 'TrainedModel':
  """The trained model of run `workdir` at `checkpoint` ('best', 'latest' or a step number).

  Args:
    workdir: a run directory (holds inference.json and checkpoints/); it may have been moved.
    checkpoint: 'best' (by the run's best_metric), 'latest' or a saved step.
    devices: devices to predict on (default: this process's devices); batches split over them.
    member: with a population's workdir, the member to load (its run dir
      `population.member_dir(workdir, member)`, a single run's).

  Raises:
    CheckpointError: one line when the run has no such checkpoint, comes from a newer hybrid_jax,
      or its checkpoints do not fit the model its inference.json describes.
  """
  workdir = population.run_dir(workdir, member)
  spec = read_spec(workdir)
  config = ml_collections.ConfigDict(spec['config'])
  config.lock()
  devices = tuple(devices or jax.local_devices())
  model = input_kinds.create_model(config)
  key = jax.random.key(0)
  shapes = jax.eval_shape(
    lambda: model.init(
      {'params': key, 'dropout': key}, input_kinds.dummy_batch(config, 2), train=False
    )
  )
  abstract = checkpoints.abstract_like(
    steps.variables_target(shapes), parallel.replicated_sharding(devices)
  )
  best_metric = config.best_metric or heads.head(spec['head']['kind']).best_metric
  # Orbax warns about what is done here on purpose (a read-only manager; the checks read a step's
  # item, which has no metadata file of its own): dropped for this span only, not process-wide.
  with orbax_logs.quiet():
    manager = checkpoints.create_manager(workdir, 1, best_metric, read_only=True)
    try:
      restored = checkpoints.restore(manager, checkpoint, abstract, config=config, params_only=True)
    finally:
      manager.close()
  return TrainedModel(
    spec,
    config,
    model,
    steps.variables_of(restored.state),
    restored.step,
    os.path.join(checkpoints.checkpoint_dir(workdir), str(restored.step)),
    devices,
  )


class TrainedModel:
  """A trained run's model, ready for raw inputs (see the module docstring; build with `load`).

  Attributes:
    config: the run's resolved config (locked).
    task: 'video' | 'text' | 'sensor' (the input kind).
    head: 'classification' | 'regression'.
    label_names: class names by id (classification), () for regression.
    branch_names: the branches feeding the head, in order: ('cnn', 'lstm'), ('cnn',) or ('lstm',).
    step, checkpoint: the restored step and its directory.
    variables: the model's variables ('params', and its statistics where it has them), replicated
      on `devices`; `params` is `variables['params']`.
    num_traces: how many times the model function was traced (compiled) so far.
  """

  def __init__(
    self, spec, config, model, variables, step: int, checkpoint: str, devices: Sequence[Any]
  ):
    self.spec, self.config, self.variables = spec, config, variables
    self.params = variables['params']
    self.task = spec['task']
    self.head = spec['head']['kind']
    self._head = heads.head(self.head)
    self.label_names = tuple(spec['head'].get('label_names', ()))
    self.branch_names = tuple(b for b in ('cnn', 'lstm') if model.uses(b))
    self.step, self.checkpoint, self.devices = step, checkpoint, tuple(devices)
    self.num_traces = 0
    self._model = model
    self._raw = raw_inputs.RawInputs(self.task, config, spec['input'])
    self._batch_sharding = NamedSharding(parallel.mesh(self.devices), PartitionSpec(parallel.AXIS))
    self._forward = jax.jit(self._forward_fn, static_argnames='zero')
    self._apply_head = jax.jit(self._head_fn)

  def __repr__(self) -> str:
    return (
      f'TrainedModel({self.task}, {self.head}, step {self.step}, branches '
      f'{self.branch_names}, {len(self.devices)} device(s))'
    )

  @property
  def inputs(self) -> str:
    """What `predict` takes, in words (e.g. 'clips (10, 64, 64, 1) [time, ...] uint8')."""
    return self._raw.description

  @property
  def example_ndim(self) -> Optional[int]:
    """Dimensions of one raw input (None: a string)."""
    return None if self._raw.shape is None else len(self._raw.shape)

  def preprocess(self, inputs: Any) -> dict[str, np.ndarray]:
    """Raw inputs -> the model batch (numpy, N rows), exactly as the training pipeline makes it."""
    return self._raw.batch(inputs)

  def predict(
    self, inputs: Any, batch_size: int = 64, zero_branches: Sequence[str] = ()
  ) -> Predictions:
    """Predictions for N raw inputs (a list, or an array whose first axis is the inputs).

    Args:
      inputs: text: strings; video: clips [T, H, W, C]; sensor: windows [T, S, F] (original units).
      batch_size: inputs per compiled call (the last call is padded to it).
      zero_branches: branch names whose features are replaced by zeros before the head.
    """
    zero = self._check_branches(zero_branches)
    outputs, _ = self._run(
      self.preprocess(inputs), batch_size, lambda b: self._forward(self.variables, b, zero=zero)
    )
    return self._predictions(outputs)

  def embed(self, inputs: Any, batch_size: int = 64) -> dict[str, np.ndarray]:
    """Each branch's feature vector (the head's inputs): {'cnn': float32 [N, d], 'lstm': ...}."""
    _, features = self._run(
      self.preprocess(inputs), batch_size, lambda b: self._forward(self.variables, b, zero=())
    )
    return dict(zip(self.branch_names, features))

  def apply_head(self, features: Mapping[str, Any], batch_size: int = 64) -> Predictions:
    """The fusion + head applied to given branch features {name: [N, d]} (e.g. from `embed`)."""
    names = tuple(features)
    if set(names) != set(self.branch_names):
      raise InputError(
        f'Got features for {sorted(names)}; this model\'s head reads {list(self.branch_names)}.'
      )
    batch = {n: np.asarray(features[n], np.float32) for n in self.branch_names}
    sizes = {n: f.shape for n, f in batch.items()}
    if len({s[0] for s in sizes.values()}) != 1 or any(len(s) != 2 for s in sizes.values()):
      raise InputError(f'Branch features must be [N, d] arrays with the same N; got {sizes}.')
    outputs, _ = self._run(batch, batch_size, lambda b: (self._apply_head(self.variables, b), ()))
    return self._predictions(outputs)

  # Internals.

  def _check_branches(self, names: Sequence[str]) -> tuple[str, ...]:
    if isinstance(names, str):
      names = (names,)
    unknown = [n for n in names if n not in self.branch_names]
    if unknown:
      raise InputError(
        f'zero_branches={list(names)}: this model\'s branches are {list(self.branch_names)}.'
      )
    return tuple(sorted(set(names)))

  def _forward_fn(self, variables, batch, zero: tuple[str, ...]):
    """(outputs, branch features) of one batch; the head's inputs are captured (and zeroed)."""
    self.num_traces += 1  # Runs only while tracing: counts compilations.
    replace = {i: 'zero' for i, name in enumerate(self.branch_names) if name in zero}
    with ablation.branch_features(replace) as captured:
      out = self._model.apply(variables, batch, train=False)
    return self._head.outputs(out), tuple(f.astype(jnp.float32) for f in captured)

  def _head_fn(self, variables, features: dict[str, jax.Array]):
    self.num_traces += 1
    head = fusion.FusionHead(**self._model.head_kwargs())
    head_variables = {name: tree['head'] for name, tree in variables.items() if 'head' in tree}
    out = head.apply(head_variables, [features[n] for n in self.branch_names], train=False)
    return self._head.outputs(out)

  def _run(self, batch: dict[str, np.ndarray], batch_size: int, fn):
    """fn over fixed-size chunks of `batch` (last one padded), sharded over the devices."""
    if int(batch_size) < 1:
      raise InputError(f'batch_size={batch_size} must be >= 1.')
    n = raw_inputs.num_rows(batch)
    per_call = -(-int(batch_size) // len(self.devices)) * len(self.devices)
    results = []
    for start in range(0, n, per_call):
      chunk = raw_inputs.pad_rows(raw_inputs.take_rows(batch, start, start + per_call), per_call)
      results.append(fn(jax.device_put(chunk, self._batch_sharding)))
    results = jax.device_get(results)  # Every call was dispatched before the first fetch.
    return jax.tree.map(lambda *parts: np.concatenate(parts)[:n], *results)

  def _predictions(self, outputs: dict[str, np.ndarray]) -> Predictions:
    if 'values' in outputs:  # A regression head (heads.py): original units.
      head = self.spec['head']
      values = outputs['values'].astype(np.float64) * head['target_std'] + head['target_mean']
      return Predictions(label_names=(), values=values)
    return Predictions(
      label_names=self.label_names, logits=outputs['logits'], probabilities=outputs['probabilities']
    )
