"""Experiments: scripts that run the study and the benchmarks and write tables and plots.

Run from the repository root as modules; every committed result is in experiments/results/, each
file beside the command that made it.

  python -m experiments.study                    # the study (study/: protocol, arms, runs, ...)
  python -m experiments.benchmarks.train_step    # benchmarks/: train_step, peers, input_pipeline
  python -m experiments.fusion_ablation --config=configs/sensor.py
  python -m experiments.japanese_vowels_baseline
  python -m experiments.predict_raw_text --workdir=workdirs/text
  experiments/two_process_loop.sh 10 readme      # counts hangs of the two-process command
"""
