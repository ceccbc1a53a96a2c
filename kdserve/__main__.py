import sys

from kdserve.cli import main

sys.exit(main())
