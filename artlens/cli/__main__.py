"""`python -m artlens.cli …` runs the `artlens` command."""

from artlens.cli import main

main()
