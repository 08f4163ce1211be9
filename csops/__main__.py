"""`python -m csops` runs the command line."""

from csops.cli import main

if __name__ == "__main__":
    main()
