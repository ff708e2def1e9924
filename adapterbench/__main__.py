"""`python -m adapterbench`: the command line, as the `adapterbench` script runs it."""
from adapterbench.cli import main

main()
