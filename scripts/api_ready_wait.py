"""Wait until the API is ready: run inside the api container (`python3 -c "$API_READY_WAIT"`).

Polls /readyz for up to 60 s (a loaded host is slow) until it answers 200 three times in a row:
each worker caches its readiness for about a second. The Makefile's restores and the `pgstack`
command on a deployed host (ansible/roles/pgstack) both read this file.
"""

import time
import urllib.request

streak, deadline = 0, time.monotonic() + 60
while streak < 3:
    if time.monotonic() > deadline:
        raise SystemExit("api: /readyz is not 200 after 60 s; see the api service's logs")
    try:
        ok = urllib.request.urlopen("http://127.0.0.1:8000/readyz", timeout=2).status == 200
    except OSError:
        ok = False
    streak = streak + 1 if ok else 0
    time.sleep(0.3)
print("api: ready")
