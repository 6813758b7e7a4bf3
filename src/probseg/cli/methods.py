"""``probseg methods``: the registered methods, one line each."""

from __future__ import annotations

from probseg.engine import registry


def add_parser(sub) -> None:
    parser = sub.add_parser("methods", help="list the available methods", description="List the available methods.")
    parser.set_defaults(handler=run, _prog=parser.prog)


def run(args) -> int:
    """Print each method's name, title and summary."""
    names = registry.available()
    width = max(len(n) for n in names)
    for name in names:
        info = registry.get(name)
        print(f"{name:<{width}}  {info.title}: {info.summary}")
    return 0
