"""The operator's tools: the ``perf-engine`` command (:mod:`.cli`), the embedded demo,
the backfill of history files and the simulated platform (:mod:`.simulator`)."""
