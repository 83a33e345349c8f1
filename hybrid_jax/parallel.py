"""Data parallelism: every device-placement and collective detail of training lives here.

The train state is *replicated* (one logical copy, `NamedSharding(mesh, P())`) and passed to the
step with `in_axes=None` / `out_axes=None`; only the batch is split on its leading axis. Steps call
`pmean` / `psum` / `device_index` from this module instead of naming the axis themselves, so that
moving from `jax.pmap` to `jax.shard_map` (or `jit` with shardings) is a change to this file only.

Multi-host: `initialize_distributed` must run before anything touches devices. Steps then map over
all devices of all processes; each process feeds its own per-process batch, split over its local
devices.
"""

import os
from typing import Any, Callable, Sequence

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from hybrid_jax.errors import ConfigError

AXIS = 'batch'  # Name of the mapped device axis used by every collective.

# Environment variables that announce a multi-process launch (explicit coordinator, or a cluster
# that jax.distributed.initialize() auto-detects).
_DISTRIBUTED_ENV = (
  'JAX_COORDINATOR_ADDRESS',
  'JAX_NUM_PROCESSES',
  'SLURM_NTASKS',
  'OMPI_COMM_WORLD_SIZE',
  'TPU_WORKER_HOSTNAMES',
)


def initialize_distributed(requested: bool = False) -> None:
  """Calls `jax.distributed.initialize()` when asked to or when the environment says so.

  Args:
    requested: `config.distributed`; force initialization even without the environment hints.
  """
  env_hint = any(os.environ.get(name) for name in _DISTRIBUTED_ENV)
  if os.environ.get('SLURM_NTASKS') == '1':  # A single-task SLURM job is not multi-process.
    env_hint = any(os.environ.get(n) for n in _DISTRIBUTED_ENV if n != 'SLURM_NTASKS')
  if not (requested or env_hint):
    return
  # Cross-process collectives for CPU devices (no effect on GPU/TPU computations).
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  # JAX reads JAX_COORDINATOR_ADDRESS itself (or detects SLURM/MPI/TPU); process count and id
  # may be given as JAX_NUM_PROCESSES / JAX_PROCESS_ID for a hand-launched cluster.
  kwargs = {
    name: int(os.environ[var])
    for name, var in (('num_processes', 'JAX_NUM_PROCESSES'), ('process_id', 'JAX_PROCESS_ID'))
    if os.environ.get(var)
  }
  jax.distributed.initialize(**kwargs)
  logging.info(
    'jax.distributed initialized: process %d of %d, %d local / %d global devices.',
    jax.process_index(),
    jax.process_count(),
    jax.local_device_count(),
    jax.device_count(),
  )


def as_process_0_sees_it(flag: bool) -> bool:
  """`flag` as process 0 computed it, on every process (one collective; `flag` itself when alone).

  For a decision that every process must take the same way although it reads the file system,
  which another process may change in the meantime: process 0 of a fresh run creates the checkpoint
  directory that a slower process 1 would otherwise find and try to restore from.
  """
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.broadcast_one_to_all(np.asarray(flag)))


def default_devices() -> list[Any]:
  """All devices of all processes (what a multi-host step must map over)."""
  return jax.devices()


def local_devices(devices: Sequence[Any]) -> list[Any]:
  """The devices of `devices` that belong to this process, in order."""
  return [d for d in devices if d.process_index == jax.process_index()]


def per_process_batch_size(global_batch_size: int, devices: Sequence[Any], name: str) -> int:
  """Checks that a global batch splits evenly over processes and devices; returns B per process.

  Args:
    global_batch_size: the config's global batch (e.g. `config.batch_size`).
    devices: devices the step maps over (all processes).
    name: config field name used in the error message.

  Raises:
    ConfigError: one line naming the numbers when the batch does not divide.
  """
  num_devices, num_processes = len(devices), jax.process_count()
  if global_batch_size <= 0 or global_batch_size % num_devices:
    raise ConfigError(
      f'config.{name}={global_batch_size} must be a positive multiple of the {num_devices} '
      f'devices ({num_processes} process(es)); e.g. --config.{name}='
      f'{max(num_devices, global_batch_size // num_devices * num_devices)}.'
    )
  return global_batch_size // num_processes


def mesh(devices: Sequence[Any]) -> Mesh:
  """A 1-D mesh over `devices` with the batch axis name."""
  return Mesh(np.asarray(devices), (AXIS,))


def replicated_sharding(devices: Sequence[Any]) -> NamedSharding:
  """Sharding of a value copied in full onto every device (the train state)."""
  return NamedSharding(mesh(devices), PartitionSpec())


def replicate(tree: Any, devices: Sequence[Any]) -> Any:
  """Places a (host or device) pytree replicated on `devices`, the layout the steps expect."""
  sharding = replicated_sharding(devices)
  if jax.process_count() == 1:
    return jax.device_put(tree, sharding)
  return jax.tree.map(
    lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), tree
  )


def to_global(tree: Any, devices: Sequence[Any]) -> Any:
  """Re-labels a replicated step output as one global array over `devices` (no copy).

  pmap's `out_axes=None` outputs are host-local (a mesh of this process's devices); checkpointing
  on several processes needs global arrays, or every process would claim to own the data. A no-op
  on a single process.
  """
  if jax.process_count() == 1:
    return tree
  sharding = replicated_sharding(devices)

  def relabel(x):
    on_device = {shard.device: shard.data for shard in x.addressable_shards}
    return jax.make_array_from_single_device_arrays(
      x.shape, sharding, [on_device[d] for d in sharding.addressable_devices_indices_map(x.shape)]
    )

  return jax.tree.map(relabel, tree)


def shard_batch(batch: dict[str, np.ndarray], num_local_devices: int) -> dict[str, np.ndarray]:
  """Splits each per-process array [B, ...] into [local_devices, B // local_devices, ...].

  Raises:
    ConfigError: one line naming the numbers when B does not divide by the local device count.
  """

  def split(x):
    x = np.asarray(x)
    if x.shape[0] % num_local_devices:
      raise ConfigError(
        f'A batch of {x.shape[0]} examples does not split over '
        f'{num_local_devices} local devices: use a batch size divisible by it.'
      )
    return x.reshape((num_local_devices, x.shape[0] // num_local_devices) + x.shape[1:])

  return jax.tree.map(split, batch)


def pmap(
  fn: Callable[..., Any], devices: Sequence[Any], *, in_axes, out_axes, donate_argnums=()
) -> Callable[..., Any]:
  """`jax.pmap` over `devices` with this module's axis name (the one place that maps steps)."""
  return jax.pmap(
    fn,
    axis_name=AXIS,
    devices=list(devices),
    in_axes=in_axes,
    out_axes=out_axes,
    donate_argnums=donate_argnums,
  )


def pmean(tree: Any) -> Any:
  """Mean over the device axis (inside a mapped step)."""
  return jax.lax.pmean(tree, AXIS)


def pmean_if_mapped(tree: Any) -> Any:
  """Mean over the device axis inside a mapped step; unchanged outside one (e.g. a plain jit)."""
  try:
    return jax.lax.pmean(tree, AXIS)
  except NameError:  # The axis is unbound: not inside parallel.pmap.
    return tree


def psum(tree: Any) -> Any:
  """Sum over the device axis (inside a mapped step)."""
  return jax.lax.psum(tree, AXIS)


def device_index() -> jax.Array:
  """This shard's index along the device axis (inside a mapped step); folds into RNG keys."""
  return jax.lax.axis_index(AXIS)


def to_host(tree: Any) -> Any:
  """Fetches a replicated pytree to numpy on this process (works for multi-host global arrays)."""

  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(x.addressable_data(0))
    return np.asarray(x)

  return jax.tree.map(fetch, tree)
