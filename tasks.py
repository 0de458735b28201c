"""Invoke tasks: imperative and remote work. Every file artifact is built by make (see Makefile).

    invoke --list
"""

from invoke import Collection

from device import tasks as board_tasks
from pulsar2 import tasks as pulsar2_tasks

ns = Collection()
ns.add_collection(board_tasks.board)
ns.add_collection(pulsar2_tasks.pulsar2)
