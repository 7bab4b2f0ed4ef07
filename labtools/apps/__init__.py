"""The course's WebSocket apps, each an ``EventServer`` with PROTOCOL.md's events: its state
and its handlers, built by ``build(**options)``, the same on one node or several.

``minichat`` (lesson 04·1: every message to everyone), ``bands`` (lesson 05: shared votes, whole
list or deltas), ``tickets`` (lesson 06: acknowledged requests), ``map`` (lesson 07: to everyone
but the sender), ``chat`` (lesson 08's private chat, a package) and ``relay`` (lesson 09's
experiment: private messages through rooms, no page).
"""
