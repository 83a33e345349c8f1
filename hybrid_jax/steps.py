"""The optimizer, the train state and the jit+pmap steps (pure functions, importable).

tx, schedule = create_optimizer(config)                      # Adam (Keras defaults) + schedule
state = create_train_state(config, model, rng)                # TrainState (step, params, opt_state)
state, metrics = train_step(state, batch, dropout_key, ...)   # inside pmap, batch [B/devices, ...]
sums = eval_step(state, batch, ...)                           # inside pmap, summed over devices
p_train, p_eval = make_steps(devices, head, top_k)            # both pmapped (parallel.py)
metrics = run_eval(p_eval, state, batches, ...)               # every eval example once
"""

import functools
from typing import Any, Callable, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax.training import train_state as train_state_lib

from hybrid_jax import errors
from hybrid_jax import heads
from hybrid_jax import input_kinds
from hybrid_jax import metrics as metrics_lib
from hybrid_jax import parallel
from hybrid_jax.models import fusion

TrainState = train_state_lib.TrainState


class TrainStateWithModelState(TrainState):
  """A TrainState that also carries the model's non-trainable variables (e.g. 'norm_stats').

  Only models that have such variables use it, so the checkpoints of all other models keep the
  plain TrainState's structure.
  """

  model_state: Any = None


def variables_target(variable_shapes: dict[str, Any]) -> dict[str, Any]:
  """The restore target of a model's variables (`checkpoints.restore(..., params_only=True)`).

  Args:
    variable_shapes: `model.init`'s output (or its `jax.eval_shape`).
  Returns:
    {'params': ...} plus {'model_state': the other collections} where the model has any, the
    structure of the train state's fields.
  """
  target = {'params': variable_shapes['params']}
  model_state = {k: v for k, v in variable_shapes.items() if k not in ('params', 'intermediates')}
  if model_state:
    target['model_state'] = model_state
  return target


def variables_of(restored: dict[str, Any]) -> dict[str, Any]:
  """`model.apply`'s variables from a `variables_target`-shaped restore."""
  return {'params': restored['params'], **restored.get('model_state', {})}


def model_variables(state: TrainState, params: Any = None) -> dict[str, Any]:
  """{'params': ..., plus the model's other collections}: what `model.apply` takes."""
  params = state.params if params is None else params
  return {'params': params, **(getattr(state, 'model_state', None) or {})}


# Learning-rate schedules by config.lr_schedule:
# (peak learning rate, warmup steps, run length) -> optax schedule.
SCHEDULES = {
  'constant': lambda lr, warmup, steps: optax.constant_schedule(lr),
  'warmup_cosine': lambda lr, warmup, steps: optax.warmup_cosine_decay_schedule(
    init_value=0.0, peak_value=lr, warmup_steps=warmup, decay_steps=steps, end_value=0.0
  ),
}


def build_optimizer(
  learning_rate: Any,
  lr_schedule: str,
  warmup_steps: int,
  num_train_steps: int,
  grad_clip_norm: float,
  weight_decay: float,
):
  """(optax transformation, learning-rate schedule): Adam (Keras defaults) with the schedule.

  `learning_rate` may be a traced value (a population member's, population.create_optimizer).
  The config's values were checked by config_validation (e.g. warmup_steps < num_train_steps).
  """
  schedule = SCHEDULES[lr_schedule](learning_rate, warmup_steps, num_train_steps)
  # Keras Adam defaults (the reference): b1=0.9, b2=0.999, eps=1e-7. Decoupled decay applies to
  # kernels and embeddings only, never to biases or scales.
  if weight_decay > 0:
    adam = optax.adamw(
      schedule,
      b1=0.9,
      b2=0.999,
      eps=1e-7,
      weight_decay=weight_decay,
      mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params),
    )
  else:
    adam = optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-7)
  if grad_clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(grad_clip_norm), adam), schedule
  return adam, schedule


# Cached so that identical configs share one optimizer object (and so compiled steps).
_optimizer = functools.lru_cache(maxsize=None)(build_optimizer)


def optimizer_fields(config: ml_collections.ConfigDict) -> tuple:
  """The optimisation fields but the learning rate, in `build_optimizer`'s order."""
  return (
    config.lr_schedule,
    int(config.warmup_steps),
    int(config.num_train_steps),
    float(config.grad_clip_norm),
    float(config.weight_decay),
  )


def create_optimizer(config: ml_collections.ConfigDict):
  """(optax transformation, learning-rate schedule) from the config's optimisation fields."""
  return _optimizer(float(config.learning_rate), *optimizer_fields(config))


def create_train_state(
  config: ml_collections.ConfigDict, model, rng: jax.Array, tx: Any = None
) -> TrainState:
  """Initial state: parameters from `model.init` on a dummy batch, Adam state, step 0.

  Args:
    config: the run config (model fields and optimisation fields).
    model: `input_kinds.create_model(config)`.
    rng: parameter-initialisation key.
    tx: the optimizer (default: `create_optimizer(config)`'s).
  """
  variables = model.init(
    {'params': rng, 'dropout': rng}, input_kinds.dummy_batch(config, 2), train=False
  )
  tx = create_optimizer(config)[0] if tx is None else tx
  model_state = {k: v for k, v in variables.items() if k not in ('params', 'intermediates')}
  if model_state:
    return TrainStateWithModelState.create(
      apply_fn=model.apply, params=variables['params'], tx=tx, model_state=model_state
    )
  return TrainState.create(apply_fn=model.apply, params=variables['params'], tx=tx)


def _find(tree: Any, name: str) -> Any:
  """The value stored under key `name` anywhere in a nested dict (None when absent)."""
  if isinstance(tree, dict) or hasattr(tree, 'items'):
    for key, value in tree.items():
      found = value if key == name else _find(value, name)
      if found is not None:
        return found
  return None


def train_step(
  state: TrainState,
  batch: dict[str, jax.Array],
  dropout_key: jax.Array,
  *,
  head: str,
  aux_loss_weight: float = 0.0,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimizer step on one device's shard; gradients and metrics averaged over devices.

  Args:
    state: replicated train state.
    batch: this device's shard, e.g. 'clip' [B/devices, T, H, W, C] and 'label' [B/devices].
    dropout_key: replicated base key; the step and the device index are folded in here.
    head: a `heads.HEADS` name: its loss on its label key ('label' or 'target').
    aux_loss_weight: config.model.aux_loss_weight: the loss adds this times the sum of the
      branches' auxiliary head losses (fusion.FusionHead; 0: none).

  Returns:
    (new state, {'loss' (the objective), 'fused_loss' when there are auxiliary losses, the head's
    train metrics, 'grad_norm'}: float32 scalars averaged over devices). The model's running
    statistics (model_state), if any, are updated too.
  """
  key = jax.random.fold_in(jax.random.fold_in(dropout_key, state.step), parallel.device_index())

  the_head = heads.head(head)
  labels = batch[the_head.label_key]

  collections = list(getattr(state, 'model_state', None) or {})

  def loss_fn(params):
    out, updated = state.apply_fn(
      model_variables(state, params),
      batch,
      train=True,
      rngs={'dropout': key},
      mutable=collections + ['intermediates'],
    )
    fused_loss = the_head.loss(out, labels)
    loss = fused_loss
    if aux_loss_weight:
      aux_outputs = _find(updated['intermediates'], fusion.AUX_OUTPUTS)[0]
      loss = loss + aux_loss_weight * sum(the_head.loss(o, labels) for o in aux_outputs)
    return loss, (out, fused_loss, {k: updated[k] for k in collections})

  (loss, (out, fused_loss, model_state)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
    state.params
  )
  grads = parallel.pmean(grads)  # Equal shards: the mean of shard means is the global mean.
  metrics = {'loss': loss, **the_head.train_metrics(out, labels)}  # Then grad_norm.
  if aux_loss_weight:
    metrics['fused_loss'] = fused_loss
  metrics = parallel.pmean(metrics)
  metrics['grad_norm'] = optax.global_norm(grads)  # Of the averaged gradient (same everywhere).
  new_state = state.apply_gradients(grads=grads)
  if collections:  # The statistics were computed from the global batch (pmean inside the model).
    new_state = new_state.replace(model_state=model_state)
  return new_state, metrics


def eval_step(
  state: TrainState, batch: dict[str, jax.Array], *, head: str, top_k: int, with_confusion: bool
) -> dict[str, jax.Array]:
  """Metric sums of one device's shard, summed over devices (see metrics.py).

  Args:
    batch: this device's shard plus 'mask' [B/devices] bool (False on padding rows).
  """
  out = state.apply_fn(model_variables(state), batch, train=False)
  mask = batch.get('mask', jnp.ones(out.shape[:1], bool))
  the_head = heads.head(head)
  return parallel.psum(the_head.sums(out, batch[the_head.label_key], mask, top_k, with_confusion))


@functools.lru_cache(maxsize=None)
def make_steps(
  devices: tuple[Any, ...], head: str, top_k: int, aux_loss_weight: float = 0.0
) -> tuple[Callable[..., Any], Callable[..., Any]]:
  """pmapped (train_step, eval_step) over `devices`: state replicated, batch split, state donated.

  Cached per arguments so repeated runs in one process reuse compiled code.
  """
  return pmap_steps(
    devices,
    functools.partial(train_step, head=head, aux_loss_weight=aux_loss_weight),
    functools.partial(
      eval_step, head=head, top_k=top_k, with_confusion=not heads.head(head).regression
    ),
    num_train_args=3,
  )


def pmap_steps(
  devices: Sequence[Any], train_fn: Callable[..., Any], eval_fn: Callable[..., Any], num_train_args
) -> tuple[Callable[..., Any], Callable[..., Any]]:
  """pmapped (train_fn, eval_fn): argument 0 (the state) replicated and donated, argument 1 (the
  batch) split over `devices`, any further train arguments replicated; outputs replicated."""
  p_train = parallel.pmap(
    train_fn,
    devices,
    in_axes=(None, 0) + (None,) * (num_train_args - 2),
    out_axes=(None, None),
    donate_argnums=(0,),
  )
  p_eval = parallel.pmap(eval_fn, devices, in_axes=(None, 0), out_axes=None)
  return p_train, p_eval


def run_eval(
  p_eval_step: Callable[..., Any],
  state: TrainState,
  batches: Iterable[dict[str, np.ndarray]],
  num_local_devices: int,
  top_k: int,
  target_std: Optional[float],
) -> dict[str, object]:
  """Evaluates `state` on every batch (each example once); returns `metrics.finalize` output.

  One eval step is in flight at a time: each one's sums are fetched before the next is
  dispatched. Eval steps do not depend on each other, so dispatching them all at once lets the
  CPU runtime run several concurrently, and with several processes their cross-process
  collectives (gloo) can then pair up differently in each process and wait for ever.
  """
  total = None
  for batch in batches:
    sums = p_eval_step(state, parallel.shard_batch(batch, num_local_devices))
    total = metrics_lib.add_sums(total, parallel.to_host(sums))
  if total is None:
    raise errors.DataError('The eval split produced no batches: check config.dataset.eval_split.')
  return metrics_lib.finalize(total, top_k, target_std)
