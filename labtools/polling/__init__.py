"""The REST chat of the polling lessons (01-02): ``server`` (the app: short polling, long polling
and SSE on one store), ``site`` (the running server: its socket, and its store the same on every
node through its adapter), ``store`` (who wrote what to whom, a machine of the server's log), ``client`` (a
lean HTTP/1.1 client for the simulated users) and ``sse`` (the SSE parser, free of I/O)."""
