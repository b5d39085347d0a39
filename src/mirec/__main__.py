"""``python -m mirec`` is the ``mirec`` command."""

from mirec.cli.main import main

main()
