"""``python -m medtls.config --json``: the JSON Schema of medtls.yaml (docs/medtls.schema.json)."""

import sys

from medtls.config.schema import json_text

if sys.argv[1:] != ["--json"]:
    print("usage: python -m medtls.config --json", file=sys.stderr)
    sys.exit(2)
sys.stdout.write(json_text())
