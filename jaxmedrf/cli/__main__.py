import sys

from jaxmedrf.cli import main

sys.exit(main())
