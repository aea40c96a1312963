"""CLI group (in progress: being written by its owner, see docs/ARCHITECTURE.md)."""


def register(sub) -> None:
    pass
