import sys

from autoencoded.cli import main

sys.exit(main())
