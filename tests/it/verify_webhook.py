"""Verifies Standard Webhooks signatures with Python's standard library alone, independently of
ccrelay's Rust signing code. Reads JSON lines from stdin, one request each:
{"secret": "whsec_...", "id": ..., "timestamp": ..., "signature": ..., "body_base64": ...}
and prints one line per request: "ok" or "bad <reason>". Exits 1 if any is bad."""
import base64
import hashlib
import hmac
import json
import sys

bad = 0
for line in sys.stdin:
    request = json.loads(line)
    key = base64.b64decode(request["secret"].removeprefix("whsec_"))
    body = base64.b64decode(request["body_base64"])
    signed = f"{request['id']}.{request['timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    # The header may carry several space-separated signatures, each "v1,<base64>".
    found = [part.split(",", 1)[1] for part in request["signature"].split() if part.startswith("v1,")]
    if any(hmac.compare_digest(expected, candidate) for candidate in found):
        print("ok")
    else:
        bad += 1
        print(f"bad: expected v1,{expected}, got {request['signature']}")
sys.exit(1 if bad else 0)
