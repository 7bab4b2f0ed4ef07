"""Simulated users: crowds on every transport (``crowd`` with the modes of ``http_users`` and
``ws_users``, both of the shape ``users`` defines), lesson 01's story (``conversation``), the apps'
users (``voters``, ``desks``, ``markers``, ``chat_users``), lesson 10's bad network (``faults``) and
reconnection with backoff (``reconnect``). The lessons' experiments built on them live in
``experiments``."""
