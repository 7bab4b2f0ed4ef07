"""Several nodes of one app, sharing through a broker (lesson 11).

One process serves a few thousand sockets; past that, or to survive one process dying, an app
runs as several *nodes* behind a front door, and the nodes share what they must through Redis:
``bus`` is the ephemeral pub/sub between them (what Socket.IO's Redis adapter does), and the
log and replicas (recoverable streams, one state replicated in order) live beside it.
"""
