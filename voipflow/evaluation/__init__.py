"""Evaluation that tests, benchmarks and ``voipflow eval`` share.

* :mod:`~voipflow.evaluation.captures`: labelled captures through softflowd
  and the collector's decoder into the classifier, scored (``voipflow eval``);
* :mod:`~voipflow.evaluation.heldout`: held-out captures labelled by
  construction (``python -m voipflow.evaluation.heldout build|eval|ndpi DIR``);
* :mod:`~voipflow.evaluation.simclassify`: the simulator's traffic model
  through the classifier in process, per app;
* :mod:`~voipflow.evaluation.chserver`: a throw-away clickhouse-server process
  and :mod:`~voipflow.evaluation.sinkdata`: voip-flows messages, for the sink's
  tests and benchmark.

Nothing here runs on the pipeline's hot path; it measures it.
"""
