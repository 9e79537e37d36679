"""Capture what the official Aliyun Python SDK sends for KMS calls, as golden vectors.

Run once (not in CI):
    python3 -m venv /tmp/aliyun-venv
    /tmp/aliyun-venv/bin/pip install alibabacloud-kms20160120==3.3.1
    /tmp/aliyun-venv/bin/python scripts/golden/capture_aliyun_acs3.py > crates/dvn/tests/fixtures/aliyun_acs3_golden.json

A local HTTP server on 127.0.0.1 records each request exactly as the SDK sent it (method, path,
query string, headers, body). The SDK computes the ACS3-HMAC-SHA256 `Authorization` header
with its own code; our Rust signer must reproduce it byte for byte from the same inputs.
The access key below is a made-up test value.
"""
import base64
import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client
from alibabacloud_tea_openapi import models as open_api_models

ACCESS_KEY_ID = "LTAI5tTestGoldenKeyId01"
ACCESS_KEY_SECRET = "TestGoldenSecret0123456789abcdefABCDEF"
captured = []


class Handler(BaseHTTPRequestHandler):
    def _record(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        captured.append(
            {
                "method": self.command,
                "target": self.path,
                "headers": [[k, v] for k, v in self.headers.items()],
                "body": body.decode(),
            }
        )
        payload = json.dumps(
            {"RequestId": "golden", "KeyId": "key", "KeyVersionId": "v", "Value": "", "PublicKey": ""}
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_POST = _record
    do_GET = _record

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
client = Client(
    open_api_models.Config(
        access_key_id=ACCESS_KEY_ID,
        access_key_secret=ACCESS_KEY_SECRET,
        endpoint=f"127.0.0.1:{server.server_address[1]}",
        protocol="http",
        region_id="cn-hangzhou",
    )
)
for i, key_id in enumerate(["key-0a1b2c3d", "alias/dvn-aliyun"]):
    digest = hashlib.sha256(f"golden digest {i}".encode()).digest()
    client.asymmetric_sign(
        models.AsymmetricSignRequest(
            key_id=key_id,
            key_version_id="ver-5e6f7a8b",
            algorithm="ECDSA_SHA_256",
            digest=base64.b64encode(digest).decode(),
        )
    )
client.get_public_key(models.GetPublicKeyRequest(key_id="key-0a1b2c3d", key_version_id="ver-5e6f7a8b"))
server.shutdown()
print(
    json.dumps(
        {
            "sdk": "alibabacloud-kms20160120==3.3.1",
            "access_key_id": ACCESS_KEY_ID,
            "access_key_secret": ACCESS_KEY_SECRET,
            "requests": captured,
        },
        indent=2,
    )
)
