"""Operations: the main command (``python -m callcenter.ops.run``) and the
supervisor of its child processes, the health and metrics endpoints
(``health``; ``metrics`` for one process, ``clustermetrics`` for the whole
system at scrape), and what the backend asks Redis directly (``redisconn``)."""
