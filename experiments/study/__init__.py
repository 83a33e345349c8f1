"""The study: is concatenating CNN and LSTM outputs meaningful? (`python -m experiments.study`)

grids.py       the datasets and their default grids (arms, seeds, rates, run length)
protocol.py    the protocol (flags -> configs); runs a dataset end to end (`run_study`)
arms.py        the arms: what each trains, and the parameter-matched capacity controls
runs.py        one run: train it, or reuse it when finished, or resume it; its time over all sittings
outputs.py     the test phase: a kept checkpoint's per-example outputs, the late ensemble, the probe
populations.py an arm's runs trained as populations
stats.py       statistics (numpy only): seed and two-level bootstraps, paired tests, Holm, CIs
selection.py   the choice on validation (loss tie-break) and the learning-rate grid's edge
cka.py         linear CKA between the concat model's branch features
analysis.py    the verdict rule and its revisions, the comparisons, the controls' gate
report.py      the markdown reports
plots.py       their plots (matplotlib)
__main__.py    the command-line flags
"""
