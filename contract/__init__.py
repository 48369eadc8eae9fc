"""What the dispatcher and the agent share and neither owns: the room-metadata contract (v1) and
the dispatch's own metadata (`contract.metadata`), and the root of the project's errors
(`contract.errors`). It imports nothing of the project."""
