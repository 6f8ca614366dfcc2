"""The streaming worker and its state store.

:mod:`.app` builds the Faust app, :mod:`.faust_internals` is the one module that reaches
into Faust's private consumer API, :mod:`.processor` turns a batch of records into state
writes and stats events, :mod:`.store` and :mod:`.keyspace` are the Redis state,
:mod:`.publisher`, :mod:`.web` and :mod:`.instrumentation` publish, serve and count.
"""
