import sys

from onespike.cli import main

sys.exit(main())
