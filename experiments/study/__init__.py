"""The study: is concatenating CNN and LSTM outputs meaningful? (`python -m experiments.study`)

protocol.py   datasets, their grids and the protocol; runs a dataset end to end (`run_study`)
arms.py       the arms: what each trains, and the parameter-matched capacity controls
runs.py       one run: train (or reuse / resume), then its kept checkpoint on test
stats.py      statistics (numpy only): seed bootstraps, paired tests, Holm, test-set CIs, CKA
report.py     the analysis, the markdown reports and the plots
__main__.py   the command-line flags
"""
