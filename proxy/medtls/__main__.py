"""`python -m medtls ...` (how the enrollment service runs under Debian's /usr/bin/python3)."""

import sys

from medtls.cli import main

sys.exit(main())
