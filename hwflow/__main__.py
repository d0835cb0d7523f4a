import sys

from hwflow.cli import main

sys.exit(main())
