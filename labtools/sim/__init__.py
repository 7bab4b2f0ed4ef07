"""Simulated users and the lessons' experiments: crowds on every transport (``crowd`` with the
modes of ``http_users`` and ``ws_users``, both of the shape ``users`` defines), lesson 01's
story (``conversation``), the apps' users (``voters``, ``desks``, ``markers``, ``chat_users``),
cost models (``cost``), lesson 09's measurement at scale (``scale``, its servers in a process of
their own: ``scale_server``), lesson 10's bad network (``faults``) and reconnection with backoff
(``reconnect``), and lesson 11's experiments on several nodes (``nodes``)."""
