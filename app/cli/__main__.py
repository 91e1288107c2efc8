"""``python -m app.cli``, the same as ``dataset-audit``."""

from app.cli import main

raise SystemExit(main())
