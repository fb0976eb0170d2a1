import sys

from edgemir.cli import main

sys.exit(main())
