"""The study: is concatenating CNN and LSTM outputs meaningful? (`python -m experiments.study`)

grids.py          the datasets and their default grids (arms, seeds, rates, run length)
protocol.py       the protocol (flags -> configs, run dirs, the datasets' margins and test blocks)
conduct.py        the study conducted: train, choose rates, test, write the reports (`run_study`)
progress.py       what a study will train and has finished (printed first; --plan)
arms.py           the arms: what each trains, and the parameter-matched capacity controls
runs.py           one run: trained, reused when finished, or resumed; its time over all sittings
outputs.py        the test phase: per-example outputs of a kept checkpoint, the ensemble, the probe
populations.py    an arm's runs trained as populations
stats.py          statistics (numpy only): seed and two-level bootstraps, paired tests, Holm, CIs
selection.py      the choice on validation (loss tie-break) and the learning-rate grid's edge
cka.py            linear CKA between the concat model's branch features
analysis.py       the comparisons of concat with every arm, their statistics, the diagnosis
rule.py           the decision rule declared in advance, its revisions, the controls' gate
report.py         each dataset's markdown report
summary_report.py the summary across datasets (study_summary.md) and the study's cost
plots.py          the reports' plots (matplotlib)
__main__.py       the command-line flags
"""
