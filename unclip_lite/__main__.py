import sys

from unclip_lite.cli import main

sys.exit(main())
