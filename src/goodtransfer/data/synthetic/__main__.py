import sys

from goodtransfer.data.synthetic.cli import main

sys.exit(main())
