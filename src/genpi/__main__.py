import sys

from genpi.cli import main

sys.exit(main())
