"""Invoke tasks for the board: deploy, eval-npu, bench, board.emulator (thin wrappers over device.*)."""

from invoke import Collection

board = Collection("board")
