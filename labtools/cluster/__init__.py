"""Several nodes of one app: the log they apply in the same order (``log``, ``redis_log``), the
replica that runs an app's state machine over it with offsets and recovery (``replica``), and
the pub/sub bus for what needs no recovery (``bus``)."""
