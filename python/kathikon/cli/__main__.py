"""``python -m kathikon.cli``: the ``kathikon`` command line."""

from . import main

main()
