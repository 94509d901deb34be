"""The images' HEALTHCHECK: exit 0 when the server's /health answers 200 (python:slim has no curl)."""

import os
import sys
import urllib.request

URL = os.environ.get("PAGEDLLM_HEALTH_URL", "http://127.0.0.1:8000/health")

try:
    with urllib.request.urlopen(URL, timeout=5) as response:
        sys.exit(0 if response.status == 200 else 1)
except OSError:
    sys.exit(1)
