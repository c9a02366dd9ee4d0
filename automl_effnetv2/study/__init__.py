"""The progressive-learning study, apart from the training code it measures.

  runner.py      configs x ablation modes x seeds, one main.py run each
                 (its command line: python -m automl_effnetv2.ablation)
  step_times.py  seconds per training step at each image size
  clocks.py      a run's time on the measured, normalized and multiply-add
                 clocks, and the equal-time length of a schedule
  stats.py       intervals, paired differences, time to a target accuracy
  report.py      one study's report, rebuilt from its finished runs' files
  answers.py     several studies' answers in one table of a document
"""
