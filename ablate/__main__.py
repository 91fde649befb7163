"""``python -m ablate``: the same command line as the ``ablate`` script (DESIGN.md's CLI contract)."""

from ablate.cli import main

main()
