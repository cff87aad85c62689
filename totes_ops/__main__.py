import sys

from totes_ops.cli import main

sys.exit(main())
