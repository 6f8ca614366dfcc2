"""The platform's side: send attempts (:mod:`.producer`), follow the stats events
(:mod:`.subscriber`) and read the latest stats (:mod:`.read_api`). Imported from
``performance_engine`` itself; nothing here imports Faust."""
