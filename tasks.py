"""Invoke tasks: imperative and remote work. Every file artifact is built by make (see Makefile).

    invoke --list
"""

from invoke import Collection

from device import tasks as board_tasks

ns = Collection()
ns.add_collection(board_tasks.board)
