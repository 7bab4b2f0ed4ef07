"""Several nodes of a lesson app behind one address (lesson 11): Debian's ``redis-server`` as
their broker (``redis``), HAProxy as their front door (``haproxy``), the ``Deployment`` that
starts all three (``deployment``), and what runs outside programs as children of the kernel on
free ports (``children``), and a learner's own command run from a cell the same way
(``launch``). Every process is a child of the kernel that ends with it."""

from ..cluster.broker import check_broker_url
from .deployment import Deployment
from .haproxy import FrontDoor, haproxy_available
from .launch import Launched, alaunch, launch
from .redis import RedisServer, missing_message, redis_available

__all__ = [
    "Deployment",
    "FrontDoor",
    "Launched",
    "RedisServer",
    "alaunch",
    "check_broker_url",
    "haproxy_available",
    "launch",
    "missing_message",
    "redis_available",
]
