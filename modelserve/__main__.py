"""Allow ``python -m modelserve``."""

from modelserve.cli import main

main()
