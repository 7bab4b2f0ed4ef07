"""The lessons' experiments that stay helpers, and the models they check: the cost models of
lessons 01 and 09 (``cost``), lesson 09's servers measured at scale (``scale``; the servers in a
process of their own: ``scale_server``) and lesson 11's experiments on several nodes (``nodes``).

A lesson shows the steps that matter in its cells; what is here is the plumbing around them
(spawning, sampling, timing), built on ``sim``'s simulated users."""
