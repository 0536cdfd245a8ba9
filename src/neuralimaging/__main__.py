"""``python -m neuralimaging``."""

from neuralimaging.cli import main

raise SystemExit(main())
