import sys

from totes_cdc.cli import main

sys.exit(main())
