"""Several nodes of one app, on Redis: the adapter an event server (or the polling server) is
given to share with its other nodes.

Modules: ``broker`` (the broker URLs a node accepts, ``check_broker_url``, and how a password
travels), ``adapter`` (``RedisAdapter``: what ``--broker`` and ``nodes=`` attach), ``bus``
(``RedisBus``: pub/sub, fire and forget), ``redis_log`` (``RedisLog``: the ordered, kept log on
a Redis Stream). What they plug into lives in ``labtools.events``.
"""
