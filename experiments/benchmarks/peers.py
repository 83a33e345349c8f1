"""hybrid_jax's train step against Keras 3 (TensorFlow or JAX backend), side by side, in one run.

The same reference models (the Keras code of the seed article: frames 64x64x3 + LSTM(64), 10
classes; text vocab 10,000 x 100, length 50; sensor 20x4) at the same batch sizes. Each round runs
every case once per framework, one fresh subprocess at a time and interleaved (hybrid_jax, then each
peer), so that a noisy machine slows all of them alike; the summary reports per case the median
over rounds and hybrid_jax / peer as a ratio.

The peers run in their own virtualenv (this project never installs TensorFlow), e.g.:

  python -m venv /tmp/peers && /tmp/peers/bin/pip install tensorflow-cpu keras jax
  JAX_PLATFORMS=cpu python -m experiments.benchmarks.peers \\
      --peer_python=/tmp/peers/bin/python --peers=keras_tensorflow --cases=video_b32_t8 --rounds=3

Figures per child: examples/s of the median timed window (and the slowest and fastest window: a
framework whose speed jumps between runs shows it here), the first call's seconds (compile + one
window) and the child's peak RSS. hybrid_jax is timed by `train_step.py --child` (the real
pmapped train step); Keras by `model.fit` on in-memory arrays (its own compiled train function,
no input pipeline cost beyond slicing arrays), Adam at 1e-3, the losses of the tasks.
`--peer_threads=N` pins TensorFlow's intra- and inter-op thread pools to N threads (0: its default).
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

from experiments.benchmarks import tables
from experiments.benchmarks.reference_shapes import REFERENCE_CASES
from experiments.benchmarks.reference_shapes import REFERENCE_MODEL
from experiments.benchmarks.reference_shapes import STEPS_PER_WINDOW

# The repository root: the children run `python -m experiments.benchmarks...` from there.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PEERS = {'keras_tensorflow': 'tensorflow', 'keras_jax': 'jax'}  # name -> KERAS_BACKEND.


def build_keras_model(task: str, extra: dict):
  """The seed article's Keras model of `task` at the reference shapes, compiled with Adam."""
  import keras  # pylint: disable=g-import-not-at-top
  from keras import layers  # pylint: disable=g-import-not-at-top

  shape = REFERENCE_MODEL[task]
  if task == 'video':
    frame = keras.Input(shape['frame_shape'])
    x = layers.Conv2D(32, 3, activation='relu', padding='same')(frame)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(64, 3, activation='relu', padding='same')(x)
    x = layers.Flatten()(layers.MaxPooling2D(2)(x))
    cnn = keras.Model(frame, x)
    key_frame = keras.Input(shape['frame_shape'])
    clip = keras.Input((extra['num_frames'], *shape['frame_shape']))
    lstm = layers.LSTM(64)(layers.TimeDistributed(cnn)(clip))
    merged = layers.Concatenate()([cnn(key_frame), lstm])
    model = keras.Model([key_frame, clip], layers.Dense(shape['num_classes'], 'softmax')(merged))
    loss = 'sparse_categorical_crossentropy'
  elif task == 'text':
    tokens = keras.Input((shape['max_length'],), dtype='int32')
    embedded = layers.Embedding(shape['vocab_size'], shape['embed_dim'])(tokens)
    x = layers.Conv1D(128, 3, activation='relu', padding='same')(embedded)
    x = layers.MaxPooling1D(2)(x)
    x = layers.Conv1D(128, 3, activation='relu', padding='same')(x)
    merged = layers.Concatenate()([layers.GlobalMaxPooling1D()(x), layers.LSTM(64)(embedded)])
    model = keras.Model(tokens, layers.Dense(shape['num_classes'], 'softmax')(merged))
    loss = 'sparse_categorical_crossentropy'
  else:
    window = keras.Input(shape['window_shape'])
    time_steps, sensors, features = shape['window_shape']
    series = layers.Reshape((time_steps, sensors * features))(window)
    x = layers.Conv1D(64, 3, activation='relu', padding='same')(series)
    x = layers.Flatten()(layers.MaxPooling1D(2)(x))
    merged = layers.Concatenate()([x, layers.LSTM(32)(series)])
    model = keras.Model(window, layers.Dense(1)(merged))
    loss = 'mse'
  model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
  return model


def synthetic_arrays(task: str, extra: dict, count: int, rng) -> tuple:
  """`count` random examples of the task's inputs and labels (numpy)."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  shape = REFERENCE_MODEL[task]
  if task == 'video':
    clip = rng.random((count, extra['num_frames'], *shape['frame_shape']), np.float32)
    return [clip[:, 0], clip], rng.integers(0, shape['num_classes'], count)
  if task == 'text':
    tokens = rng.integers(2, shape['vocab_size'], (count, shape['max_length'])).astype(np.int32)
    return tokens, rng.integers(0, shape['num_classes'], count)
  return rng.normal(size=(count, *shape['window_shape'])).astype(np.float32), rng.normal(
    size=(count, 1)
  ).astype(np.float32)


def keras_child(case: str, steps: int, windows: int, threads: int) -> dict:
  """Times `model.fit` on one case in this process (KERAS_BACKEND chosen by the parent)."""
  import numpy as np  # pylint: disable=g-import-not-at-top

  if threads and os.environ.get('KERAS_BACKEND') == 'tensorflow':
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
  import keras  # pylint: disable=g-import-not-at-top

  task, batch_size, extra = REFERENCE_CASES[case]
  model = build_keras_model(task, extra)
  x, y = synthetic_arrays(task, extra, batch_size * steps, np.random.default_rng(0))

  def window() -> float:
    start = time.perf_counter()
    model.fit(x, y, batch_size=batch_size, epochs=1, shuffle=False, verbose=0)
    return time.perf_counter() - start

  first_s = window()  # Compile + one window.
  window()  # Warm-up.
  window_s = sorted(window() for _ in range(windows))
  per_window = batch_size * steps
  return {
    'examples_per_sec': per_window / statistics.median(window_s),
    'slowest': per_window / window_s[-1],
    'fastest': per_window / window_s[0],
    'compile_s': first_s,
    'peak_rss_gb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
    'params': int(model.count_params()),
    'version': f'keras {keras.__version__}, {keras.backend.backend()} {_backend_version()}',
  }


def _backend_version() -> str:
  backend = os.environ.get('KERAS_BACKEND', 'tensorflow')
  try:
    return __import__(backend).__version__
  except ImportError:
    return '?'


def run(command: list[str], env: dict) -> dict:
  child = subprocess.run(command, capture_output=True, text=True, check=False, env=env, cwd=ROOT)
  if child.returncode != 0:
    sys.exit(f'{" ".join(command[:4])} ... failed:\n{child.stderr[-3000:]}')
  return json.loads(child.stdout.strip().splitlines()[-1])


def ours(case: str, steps: int, windows: int) -> dict:
  """hybrid_jax's pmapped train step via train_step.py's child (same interpreter)."""
  command = [sys.executable, '-m', 'experiments.benchmarks.train_step', '--child', case]
  result = run(command + ['after', str(steps), str(windows)], dict(os.environ))
  result['slowest'] = result['fastest'] = None  # That child reports the median window only.
  return result


def peer(name: str, case: str, steps: int, windows: int, args) -> dict:
  env = dict(os.environ, KERAS_BACKEND=PEERS[name], TF_CPP_MIN_LOG_LEVEL='2')
  env.pop('PYTHONPATH', None)  # The peer's own packages only (and this package, from ROOT).
  command = [
    args.peer_python,
    '-m',
    'experiments.benchmarks.peers',
    '--keras_child',
    case,
    str(steps),
  ]
  return run(command + [str(windows), str(args.peer_threads)], env)


def summarize(rows: list[tuple[str, str, int, dict]], peers: list[str]) -> list[str]:
  """Per case: median examples/s over rounds per framework and hybrid_jax / peer (pure)."""
  lines = [
    '| case | hybrid_jax ex/s | '
    + ' | '.join(f'{p} ex/s | hybrid_jax / {p}' for p in peers)
    + ' |',
    '|---|---:|' + '---:|---:|' * len(peers),
  ]
  for case in dict.fromkeys(c for c, _, _, _ in rows):
    median = {
      fw: statistics.median(r['examples_per_sec'] for c, f, _, r in rows if c == case and f == fw)
      for fw in ['hybrid_jax', *peers]
    }
    cells = [f'{median[p]:.1f} | {median["hybrid_jax"] / median[p]:.2f}' for p in peers]
    lines.append(f'| {case} | {median["hybrid_jax"]:.1f} | ' + ' | '.join(cells) + ' |')
  return lines


def main() -> None:
  if len(sys.argv) > 1 and sys.argv[1] == '--keras_child':
    case, steps, windows, threads = sys.argv[2:6]
    print(json.dumps(keras_child(case, int(steps), int(windows), int(threads))), flush=True)
    return
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--peer_python', required=True, help='Python of a venv with keras + backend.')
  parser.add_argument('--peers', default='keras_tensorflow', help=f'Of {list(PEERS)}.')
  parser.add_argument('--cases', default='video_b32_t8', help=f'Of {list(REFERENCE_CASES)}.')
  parser.add_argument('--rounds', type=int, default=3, help='Interleaved repetitions per case.')
  parser.add_argument('--windows', type=int, default=3, help='Timed windows per child.')
  parser.add_argument('--seconds', type=float, default=4.0, help='Rough seconds per window.')
  parser.add_argument('--peer_threads', type=int, default=0, help='TensorFlow threads (0: own).')
  parser.add_argument('--out', default=None, help='Also write the tables to this markdown file.')
  args = parser.parse_args()
  cases, peers = args.cases.split(','), args.peers.split(',')
  unknown = [c for c in cases if c not in REFERENCE_CASES] + [p for p in peers if p not in PEERS]
  if unknown:
    sys.exit(f'Unknown case or peer {unknown}: cases {list(REFERENCE_CASES)}, peers {list(PEERS)}.')
  rows, versions = [], {}
  for round_index in range(args.rounds):
    for case in cases:
      steps = max(1, int(STEPS_PER_WINDOW[case] * args.seconds / 4.0))
      for name in ['hybrid_jax', *peers]:
        if name == 'hybrid_jax':
          result = ours(case, steps, args.windows)
        else:
          result = peer(name, case, steps, args.windows, args)
          versions[name] = result['version']
          print(f'{name} {case}: {result["params"]:,} parameters', flush=True)
        rows.append((case, name, round_index, result))
        spread = (
          f' (windows {result["slowest"]:.1f}-{result["fastest"]:.1f})' if result['slowest'] else ''
        )
        print(
          f'round {round_index} {case} {name}: {result["examples_per_sec"]:.1f} examples/s{spread}'
          f', first call {result["compile_s"]:.1f} s, peak RSS {result["peak_rss_gb"]:.2f} GB',
          flush=True,
        )
  import jax  # pylint: disable=g-import-not-at-top

  header = (
    f'{os.cpu_count()} cores, {platform.machine()}, python {platform.python_version()}; '
    f'hybrid_jax on jax {jax.__version__} ({jax.device_count()} {jax.devices()[0].platform} '
    f'device(s)); '
    + '; '.join(f'{n}: {v}' for n, v in versions.items())
    + f'; TensorFlow threads: {args.peer_threads or "its default"}; load average '
    f'{os.getloadavg()[0]:.1f} at the end'
  )
  detail = [
    '| case | framework | round | examples/s (median window) | slowest-fastest window | '
    'first call s | peak RSS GB |',
    '|---|---|---:|---:|---:|---:|---:|',
  ]
  for case, name, round_index, r in rows:
    spread = f'{r["slowest"]:.1f}-{r["fastest"]:.1f}' if r['slowest'] else ''
    detail.append(
      f'| {case} | {name} | {round_index} | {r["examples_per_sec"]:.1f} | {spread} | '
      f'{r["compile_s"]:.1f} | {r["peak_rss_gb"]:.2f} |'
    )
  tables.write_table(
    [header, '', *summarize(rows, peers), '', *detail],
    args.out,
    'JAX_PLATFORMS=cpu python -m experiments.benchmarks.peers',
  )


if __name__ == '__main__':
  main()
