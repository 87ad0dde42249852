import sys

from goodtransfer.cli import main

sys.exit(main())
