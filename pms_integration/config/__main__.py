"""``python -m pms_integration.config [PAGE [TEMPLATE]]``, from the repository's root: regenerate
the variables tables in PAGE (docs/configuration.md) and the .env template TEMPLATE (.env.example)."""

import sys
from pathlib import Path

from . import _page_with_variables, env_template


def main(args: list[str]) -> None:
    defaults = ["docs/configuration.md", ".env.example"]
    page, template = map(Path, [*args, *defaults[len(args) :]][:2])
    page.write_text(_page_with_variables(page.read_text(encoding="utf-8")), encoding="utf-8")
    template.write_text(env_template(), encoding="utf-8")
    print(f"wrote {page} and {template}")


if __name__ == "__main__":
    main(sys.argv[1:3])
