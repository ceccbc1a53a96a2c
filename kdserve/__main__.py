from kdserve.cli import main
import sys
sys.exit(main())
