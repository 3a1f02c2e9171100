"""``python -m rnnlab`` runs the ``rnnlab`` command."""
import sys

from rnnlab.cli.main import main

sys.exit(main())
