from __future__ import annotations

import sys

from pgstack_backup.cli import main

sys.exit(main())
