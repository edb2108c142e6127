import sys

from voipflow.cli import main

sys.exit(main())
