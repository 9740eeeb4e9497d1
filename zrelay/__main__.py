"""Allow ``python -m zrelay``."""

from zrelay.cli.main import main

raise SystemExit(main())
