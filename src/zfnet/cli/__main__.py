"""``python -m zfnet.cli``: the ``zfnet`` command."""

from zfnet.cli import main

raise SystemExit(main())
