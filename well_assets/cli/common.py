"""What the `well-assets` subcommands share: exit codes, flag parsing, error output."""

from __future__ import annotations

import json
import sys
from typing import Any

from well_assets.errors import ConfigError, WellAssetsError

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def whole_number(value: Any, flag: str, minimum: int) -> int:
    """An integer flag value >= minimum, or a ConfigError naming the flag."""
    allowed = f"a whole number >= {minimum}"
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        raise ConfigError(flag, value, allowed) from None
    if number < minimum:
        raise ConfigError(flag, value, allowed)
    return number


def fail(exc: WellAssetsError, as_json: bool, code: int) -> int:
    """Prints the error (the seed's failure JSON with --json) and returns the exit code."""
    if as_json:
        print(json.dumps(exc.to_dict(), indent=2, default=str))
    else:
        print(f"error: {exc.code}: {exc.message}", file=sys.stderr)
    return code
