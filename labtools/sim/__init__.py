"""Simulated users and the lessons' experiments: crowds on every transport (``crowd`` with the
modes of ``http_users`` and ``ws_users``), lesson 01's story (``conversation``), the apps'
users (``voters``, ``desks``, ``markers``, ``chat_users``), cost models (``cost``), the
compression experiment (``compression``), lesson 09's measurement at scale (``scale``) and
lesson 10's bad network (``faults``) and reconnection with backoff (``reconnect``)."""
