"""The web dashboard, served by the worker's own web server under ``/dashboard``.

It stays off the worker's hot path: :mod:`.feed` follows the ``stats-updated`` topic with
a consumer of its own and keeps the index (:mod:`performance_engine.store.dashboard_index`:
cohorts and learners, in Redis, so pages are read a page at a time, never by a scan), the
recent history of the scopes it saw and the live stream; :mod:`.views` serves the pages,
their JSON and Server-Sent Events; the browser side is plain JavaScript in ``static/``
with uPlot for the charts (vendored, see ``dashboard/`` at the repository's root).
"""
