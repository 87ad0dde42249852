import os
import sys

if address := os.environ.get("GOODTRANSFER_WARM"):
    # Before importing anything heavy: the job runs in the warm server's forked child, or here if refused.
    from goodtransfer.warm import client

    if (code := client(address, sys.argv[1:])) is not None:
        sys.exit(code)

from goodtransfer.cli import main  # noqa: E402

sys.exit(main())
