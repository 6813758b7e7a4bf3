"""``python -m probseg``: the same command line as the ``probseg`` script."""

from probseg.cli import main

raise SystemExit(main())
