"""Fields every task shares: optimisation, schedule, logging, checkpoints, fusion, data plumbing.

Task files (video.py, text.py, sensor.py) import this `get_config()` and fill in `task`, `model` and
`dataset`. Every field can be overridden on the command line, e.g. `--config.batch_size=64`.
"""

import ml_collections

from hybrid_jax import errors


def get_config() -> ml_collections.ConfigDict:
  """The shared fields with their defaults; task files override what their task needs."""
  config = ml_collections.ConfigDict()
  # Input kind: 'video' | 'text' | 'sensor' (hybrid_jax/input_kinds.py); set by the task file.
  config.task = ''
  # 'classification' | 'regression' | '' (from the data: a 'label' or a 'target' feature).
  config.head = ''

  config.seed = 0  # Seeds parameters, dropout and data order: same seed, same numbers.

  # Optimisation (the reference compiles with Keras Adam defaults).
  config.batch_size = 32  # Global batch: split evenly over all devices of all processes.
  config.eval_batch_size = 128  # Global eval batch; the last one is padded and masked.
  config.num_train_steps = 2_000  # Length of a run, in optimizer steps.
  config.learning_rate = 1e-3  # Peak learning rate (Keras Adam default 1e-3).
  config.lr_schedule = 'constant'  # 'constant' | 'warmup_cosine'.
  config.warmup_steps = 0  # Linear warmup steps (used by 'warmup_cosine').
  config.grad_clip_norm = 0.0  # Clip gradients to this global norm; 0 turns clipping off.
  config.weight_decay = 0.0  # Decoupled weight decay (AdamW) when > 0; plain Adam at 0.

  # A population: many runs of this model in one compiled step (hybrid_jax/population.py). Member
  # k = (seeds[k // L], learning_rates[k % L]) for L rates, each the single run with its seed and
  # rate; an empty list takes config.seed / config.learning_rate; both empty: one run.
  config.population = ml_collections.ConfigDict()
  config.population.seeds = ''  # e.g. '0,1,2,3'.
  config.population.learning_rates = ''  # e.g. '3e-4,1e-3,3e-3'.

  # Logging, evaluation, checkpoints.
  config.log_every_steps = 50  # Train metrics and the progress line, every N steps.
  config.eval_every_steps = 500  # Evaluate on the eval split every N steps and at the end.
  config.checkpoint_every_steps = 500  # Save every N steps and at the end.
  config.keep_checkpoints = 3  # Keep the last K checkpoints (and the best one).
  # Stop after N evaluations without a better best_metric (the best checkpoint is kept); 0: off.
  config.early_stopping_patience = 0
  config.distributed = False  # Call jax.distributed.initialize() (multi-host runs).
  # Eval metric that picks the kept "best" checkpoint; '': the head's (accuracy / mae).
  config.best_metric = ''
  config.top_k = 5  # Also report top-k eval accuracy when the task has more than top_k classes.
  config.init_checkpoint = ''  # Run dir or checkpoint to take initial parameters from ('' : none).
  config.profile_steps = 0  # jax.profiler trace of N train steps into workdir/tensorboard; 0: off.

  # The model: exactly the model class's fields (hybrid_jax/models/); these every model shares,
  # the task file adds its input's shape and its layer sizes.
  config.model = ml_collections.ConfigDict()
  config.model.branches = 'both'  # 'both' | 'cnn' | 'lstm' | 'cnn+cnn' | 'lstm+lstm' (2 copies).
  # 'concat' | 'gated' | 'projected_sum' (when two branches feed the head).
  config.model.fusion = 'concat'
  config.model.fusion_dim = 128  # Width of the learned fusions' projections.
  config.model.dropout_rate = 0.0  # Dropout on the fused vector before the head (reference: none).
  config.model.dtype = 'float32'  # Compute dtype: 'float32' | 'bfloat16'; parameters stay float32.
  # A linear head per branch trained beside the fused one: loss = fused + weight x the sum of the
  # branch losses; 0: none (hybrid_jax/models/fusion.py).
  config.model.aux_loss_weight = 0.0
  # Probability of zeroing a whole branch's features per example in training (never all); 0: off.
  config.model.branch_dropout = 0.0
  # Where the LSTM scan computes its input projection: 'auto' | 'hoisted' | 'per_step' (the same
  # values; speed only, see hybrid_jax/models/lstm.py).
  config.model.lstm_projection = 'auto'

  # Data.
  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = ''  # A shipped builder or a TFDS catalog name; set by the task file.
  config.dataset.data_dir = ml_collections.config_dict.placeholder(str)  # None: TFDS's default dir.
  config.dataset.train_split = 'train'  # Split trained on.
  # Split evaluated during training (picks "best"); test: --mode=eval --split=test.
  config.dataset.eval_split = 'validation'
  # Module defining your own TFDS builder (imported first), e.g. 'my_pkg.my_clips'.
  config.dataset.builder_module = ''
  config.dataset.num_workers = 0  # Background grain worker processes (0: in the main process).
  # Your files as the dataset (docs/data.md): 'PATH' (one file, or NAME_TRAIN.ts with NAME_TEST.ts
  # beside it, or their folder) or 'train=PATH,test=PATH[,validation=PATH]'; '' : dataset.name.
  config.dataset.files = ''
  config.dataset.text_column = 'text'  # Files: the column (CSV) or key (JSON Lines) of the texts.
  config.dataset.label_column = 'label'  # Files: the class label column.
  config.dataset.target_column = 'target'  # Files: the numeric target column (regression).
  config.dataset.split_column = 'split'  # Files: a column of 'train' / 'validation' / 'test'.
  # Files: '' (a missing value is an error) | 'forward' (carry the last value forward).
  config.dataset.fill_missing = ''
  config.dataset.validation_fraction = 0.2  # Files: share of each class carved when no validation.
  config.dataset.test_fraction = 0.2  # Files: share of each class carved when no test split.
  # Files: None carves evenly spaced rows per class; an int shuffles within each class.
  config.dataset.split_seed = ml_collections.config_dict.placeholder(int)
  # Files: rows are in time order: carve the last rows of each class (a contiguous block).
  config.dataset.time_order = False
  # Files: how the splits were made (sizes, carve); filled by the run, recorded in config.json.
  config.dataset.splits_made = ''

  return config


def apply_variant(config: ml_collections.ConfigDict, variant: str) -> ml_collections.ConfigDict:
  """`configs/<task>.py:<variant>`; 'smoke' shrinks the run to seconds (tests and CI), same data."""
  if variant == 'smoke':
    config.batch_size = 8
    config.eval_batch_size = 16
    config.num_train_steps = 4
    config.log_every_steps = 2
    config.eval_every_steps = 4
    config.checkpoint_every_steps = 2
  elif variant:
    raise errors.ConfigError(
      f"Unknown config variant {variant!r}: append ':smoke' to the config path or nothing."
    )
  return config
