"""The REST chat of the polling lessons: its server and the clients that poll it."""
