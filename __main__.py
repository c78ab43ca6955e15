import sys

from flipq.cli import main

sys.exit(main())
