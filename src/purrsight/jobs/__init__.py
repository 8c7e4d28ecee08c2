"""Command bodies that orchestrate several floors of the library.

``models``, ``data``, ``features`` and ``inference`` are the library; ``train`` is the
trainer (Lightning, MLflow). A job may use all of them: the demo (data -> Phase 1 ->
Phase 2 -> bundle -> evaluation), ``cache-features``, ``cluster_train.sh``'s pre-flight
(:mod:`~purrsight.jobs.launch`) and the bundle commands ``export | predict | evaluate``.
Nothing below ``jobs`` imports it; ``cli.py`` only parses arguments and calls a job.
"""
