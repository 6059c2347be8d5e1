"""``python -m kathikon``: the ``kathikon`` command line."""

from .cli import main

main()
