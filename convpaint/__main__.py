"""`python -m convpaint`."""

from convpaint.cli import main

main()
