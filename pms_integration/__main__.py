"""Enables ``python -m pms_integration``."""

from .cli import main

raise SystemExit(main())
