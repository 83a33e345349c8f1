"""A population of runs of one model, trained in one compiled step: seeds x learning rates.

  members = population.members(config)            # [Member(k, seed, learning_rate)]; []: one run
  member_config(config, members[k])               # the single run that member k equals
  tx = population.create_optimizer(config)        # the config's optimizer, learning rate injected
  states = population.init_states(config, model, members)    # TrainState, every leaf [K, ...]
  p_train, p_eval = population.make_steps(devices, head, top_k, aux)   # vmapped inside pmap

Member k is (seeds[k // L], learning_rates[k % L]) for L rates (seed-major). A member with seed s
is the single run with seed s: its parameters and dropout keys come from seed s exactly as a single
run's do, and it reads the batches a single run with seed s reads (one train iterator per distinct
seed; `seed_index` maps each member to its seed's batch). Its learning rate is a value in its
optimizer state (`optax.inject_hyperparams`), so the members differ in data, not in program, and
`jax.vmap` runs them all in one step. Devices still split each member's batch and the gradients
are still averaged over the device axis (`steps.train_step` inside the vmap). A member that has
stopped (early stopping) keeps its state: `active[k]` False leaves member k's state unchanged.
"""

import copy
import dataclasses
import functools
import os
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from hybrid_jax import heads
from hybrid_jax import input_kinds
from hybrid_jax import parallel
from hybrid_jax import steps
from hybrid_jax.errors import ConfigError
from hybrid_jax.models import lstm


@dataclasses.dataclass(frozen=True)
class Member:
  """One member of a population: its index k, seed and (peak) learning rate."""

  index: int
  seed: int
  learning_rate: float


def _values(config: ml_collections.ConfigDict, field: str, kind: Callable[[str], Any]) -> list:
  """config.population.<field> as a list: '0,1,2', a sequence, or ''/None/() for none."""
  value = config.get('population', {}).get(field)
  if value is None or (not isinstance(value, str) and not len(value)):
    return []
  items = value.split(',') if isinstance(value, str) else list(value)
  try:
    out = [kind(str(x).strip()) for x in items if str(x).strip()]
  except ValueError:
    example = '0,1,2' if kind is int else '3e-4,1e-3'
    raise ConfigError(
      f'config.population.{field}={value!r} is not a comma-separated list: e.g. '
      f'--config.population.{field}={example}.'
    ) from None
  if len(set(out)) != len(out):
    raise ConfigError(f'config.population.{field}={value!r} repeats a value: list each once.')
  if field == 'learning_rates' and any(not (lr > 0 and np.isfinite(lr)) for lr in out):
    raise ConfigError(f'config.population.learning_rates={value!r}: every rate must be > 0.')
  return out


def members(config: ml_collections.ConfigDict) -> list[Member]:
  """The population of `config`, seed-major; [] when both lists are empty (a single run).

  With only seeds given, every member has config.learning_rate; with only rates, config.seed.
  """
  seeds, rates = _values(config, 'seeds', int), _values(config, 'learning_rates', float)
  if not seeds and not rates:
    return []
  seeds = seeds or [int(config.seed)]
  rates = rates or [float(config.learning_rate)]
  return [
    Member(k, seeds[k // len(rates)], rates[k % len(rates)]) for k in range(len(seeds) * len(rates))
  ]


def member_config(config: ml_collections.ConfigDict, member: Member) -> ml_collections.ConfigDict:
  """The config of the single run that `member` equals (its seed and rate, no population)."""
  config = copy.deepcopy(config)
  config.seed, config.learning_rate = member.seed, member.learning_rate
  config.population.seeds, config.population.learning_rates = '', ''
  return config


def member_dir(workdir: str, k: int) -> str:
  """Member k's run dir inside a population's workdir (a single run's workdir)."""
  return os.path.join(workdir, 'members', str(k))


def run_dir(workdir: str, member: Optional[int]) -> str:
  """The run dir to read for `member` of `workdir` (a population's member, or the run itself).

  Raises:
    ConfigError: one line when a member is asked of a single run, or none of a population, or a
      member the population does not have.
  """
  members = os.path.join(workdir, 'members')
  is_population = os.path.isdir(members) and not os.path.exists(
    os.path.join(workdir, 'inference.json')
  )
  count = len([n for n in os.listdir(members) if n.isdigit()]) if is_population else 0
  if member is None and is_population:
    raise ConfigError(
      f'{workdir} is a population of {count} members: choose one with member=k (or --member=k), '
      f'0 <= k < {count}.'
    )
  if member is not None and not is_population:
    raise ConfigError(f'{workdir} is a single run, not a population: drop member={member}.')
  if member is not None and not os.path.isdir(member_dir(workdir, member)):
    raise ConfigError(f'{workdir} has no member {member}: use 0 <= member < {count}.')
  return workdir if member is None else member_dir(workdir, member)


def distinct_seeds(population: Sequence[Member]) -> list[int]:
  """The members' seeds, each once, in the order of the first member that has it."""
  return list(dict.fromkeys(m.seed for m in population))


def seed_index(population: Sequence[Member]) -> np.ndarray:
  """[K] int32: member k reads batch `distinct_seeds(population)[seed_index[k]]`."""
  order = {s: i for i, s in enumerate(distinct_seeds(population))}
  return np.array([order[m.seed] for m in population], np.int32)


def keys(population: Sequence[Member]) -> tuple[jax.Array, jax.Array]:
  """(parameter keys [K], dropout keys [K]): each member's, as a single run with its seed has."""
  pairs = [jax.random.split(jax.random.key(m.seed)) for m in population]
  return jnp.stack([p[0] for p in pairs]), jnp.stack([p[1] for p in pairs])


@functools.lru_cache(maxsize=None)
def _injected(fields: tuple) -> optax.GradientTransformation:
  return optax.inject_hyperparams(
    lambda learning_rate: steps.build_optimizer(learning_rate, *fields)[0]
  )(learning_rate=0.0)


def create_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """The config's optimizer (`steps.build_optimizer`) with the learning rate a state value.

  The rate is `opt_state.hyperparams['learning_rate']` (set per member by `init_states`); the
  schedule's shape (warmup, decay) is the config's. Cached per optimisation fields, so that every
  population of one config shares the object (and the compiled steps).
  """
  return _injected(steps.optimizer_fields(config))


def init_states(
  config: ml_collections.ConfigDict, model: Any, population: Sequence[Member]
) -> steps.TrainState:
  """The members' initial train states, stacked: every array leaf has a leading axis K.

  Member k's parameters are those of a single run with its seed (the same key, initialised the
  same way); its optimizer state holds its learning rate. Each member is initialised by one
  compiled single-member init (compiling the vmapped init takes twice as long) and stacked.
  """
  tx = create_optimizer(config)
  params_keys, _ = keys(population)

  @jax.jit
  def one(key, rate):
    state = steps.create_train_state(config, model, key, tx=tx)
    hyperparams = {**state.opt_state.hyperparams, 'learning_rate': rate}
    return state.replace(opt_state=state.opt_state._replace(hyperparams=hyperparams))

  states = [one(params_keys[k], jnp.float32(m.learning_rate)) for k, m in enumerate(population)]
  return jax.tree.map(lambda *leaves: jnp.stack(leaves), *states)


def learning_rates(states: steps.TrainState) -> jax.Array:
  """[K] each member's current peak learning rate (from its optimizer state)."""
  return states.opt_state.hyperparams['learning_rate']


def member_state(states: steps.TrainState, k: int) -> steps.TrainState:
  """Member k's train state, unstacked (its optimizer state still holds the injected rate)."""
  return jax.tree.map(lambda x: x[k], states)


def train_step(
  states: steps.TrainState,
  batches: dict[str, jax.Array],
  dropout_keys: jax.Array,
  seed_index: jax.Array,
  active: jax.Array,
  *,
  head: str,
  aux_loss_weight: float = 0.0,
) -> tuple[steps.TrainState, dict[str, jax.Array]]:
  """`steps.train_step` of every member at once (inside the pmap: one device's shards).

  Args:
    states: the stacked states [K, ...].
    batches: one batch per distinct seed, [S, B/devices, ...] on this device.
    dropout_keys: [K] each member's base dropout key (its single run's).
    seed_index: [K] int32, which of the S batches member k reads.
    active: [K] bool; a member with False (stopped early) keeps its state.

  Returns:
    (new stacked states, metrics with a leading K axis, averaged over devices).
  """

  def one(state, key, index, on):
    batch = jax.tree.map(lambda x: x[index], batches)
    new, metrics = steps.train_step(state, batch, key, head=head, aux_loss_weight=aux_loss_weight)
    return jax.tree.map(lambda n, o: jnp.where(on, n, o), new, state), metrics

  # Traced here: the members' LSTMs run the scan (cuDNN's fused LSTM cannot be vmapped).
  with lstm.vmappable():
    return jax.vmap(one)(states, dropout_keys, seed_index, active)


def eval_step(
  states: steps.TrainState, batch: dict[str, jax.Array], **kwargs
) -> dict[str, jax.Array]:
  """`steps.eval_step` of every member on the same batch: sums with a leading K axis."""
  with lstm.vmappable():
    return jax.vmap(lambda state: steps.eval_step(state, batch, **kwargs))(states)


@functools.lru_cache(maxsize=None)
def make_steps(
  devices: tuple[Any, ...], head: str, top_k: int, aux_loss_weight: float = 0.0
) -> tuple[Callable[..., Any], Callable[..., Any]]:
  """pmapped (train_step, eval_step) of a population: states replicated, batches split, states
  donated. Cached per arguments, as `steps.make_steps`."""
  return steps.pmap_steps(
    devices,
    functools.partial(train_step, head=head, aux_loss_weight=aux_loss_weight),
    functools.partial(
      eval_step, head=head, top_k=top_k, with_confusion=not heads.head(head).regression
    ),
    num_train_args=5,
  )


def shard_batches(
  batches: Sequence[dict[str, np.ndarray]], num_local_devices: int
) -> dict[str, np.ndarray]:
  """S per-process batches [B, ...] -> [local_devices, S, B // local_devices, ...] (the step's
  layout: each device holds its share of every seed's batch)."""
  sharded = [parallel.shard_batch(b, num_local_devices) for b in batches]
  return jax.tree.map(lambda *xs: np.stack(xs, axis=1), *sharded)


@jax.jit
def keep_best(
  best: steps.TrainState, states: steps.TrainState, improved: jax.Array
) -> steps.TrainState:
  """`best` with member k's state replaced by its state in `states` where improved[k] ([K] bool)."""

  def pick(kept, new):
    return jnp.where(improved.reshape((-1,) + (1,) * (new.ndim - 1)), new, kept)

  return jax.tree.map(pick, best, states)


@jax.jit
def all_finite(states: steps.TrainState) -> jax.Array:
  """[K] bool: whether every floating-point array of member k's state is finite."""

  def one(state):
    leaves = [
      jnp.all(jnp.isfinite(x))
      for x in jax.tree.leaves((state.params, state.opt_state, steps.model_variables(state)))
      if jnp.issubdtype(x.dtype, jnp.floating)
    ]
    return jnp.all(jnp.stack(leaves))

  return jax.vmap(one)(states)


@lstm.vmappable()  # The step is the population's (scan LSTM); the state is the same.
def member_bytes(config: ml_collections.ConfigDict, model: Any) -> int:
  """Memory one member adds to a population's step, in bytes: XLA's temporaries of one train step
  (compiled for one device and the config's batch, not run) plus three copies of its state (the
  current one, its best one, and the step's new one)."""
  state = jax.eval_shape(lambda: steps.create_train_state(config, model, jax.random.key(0)))
  head = input_kinds.head(config)
  batch = {
    key: jax.ShapeDtypeStruct((1, *value.shape), value.dtype)
    for key, value in input_kinds.dummy_batch(config, int(config.batch_size)).items()
  }
  label = np.float32 if head.regression else np.int32
  batch[head.label_key] = jax.ShapeDtypeStruct((1, int(config.batch_size)), label)
  step = jax.vmap(  # One device's step: the device axis the step averages over, of size 1.
    functools.partial(steps.train_step, head=head.name),
    in_axes=(None, 0, None),
    axis_name=parallel.AXIS,
  )
  compiled = jax.jit(step).lower(state, batch, jax.random.key(0)).compile()
  state_bytes = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(state))
  return int(compiled.memory_analysis().temp_size_in_bytes) + 3 * state_bytes
