"""A stand-in for the Hugging Face hub on 127.0.0.1, serving one repo's files over plain HTTP.

    python fake_hub.py REPO_ID REVISION FILE [FILE ...]

Answers what huggingface_hub asks of `{endpoint}/{repo}/resolve/{revision}/{name}`: a HEAD with
the commit hash, ETag and size, then the GET of the bytes (an LFS file's ETag is its SHA-256).
Any other path is a 404 with the hub's "entry not found" header. Prints its port, then serves
until killed; prints each request line to stderr. With FAKE_HUB_BYTES_PER_SECOND set, bodies are
sent at that rate, so that a download is still running when a test acts on it.
"""

import hashlib
import http.server
import os
import sys
import time


def main():
    repo, revision, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
    files = {os.path.basename(p): open(p, "rb").read() for p in paths}

    class Handler(http.server.BaseHTTPRequestHandler):
        def answer(self, body):
            name = None
            for ref in ("main", revision):
                prefix = f"/{repo}/resolve/{ref}/"
                if self.path.startswith(prefix):
                    name = self.path[len(prefix):]
            if self.path == "/":
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if name not in files:
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data = files[name]
            self.send_response(200)
            self.send_header("X-Repo-Commit", revision)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                rate = int(os.environ.get("FAKE_HUB_BYTES_PER_SECOND", "0"))
                if not rate:
                    self.wfile.write(data)
                    return
                chunk = max(1, rate // 20)
                for start in range(0, len(data), chunk):
                    self.wfile.write(data[start:start + chunk])
                    self.wfile.flush()
                    time.sleep(0.05)

        def do_HEAD(self):
            self.answer(body=False)

        def do_GET(self):
            self.answer(body=True)

        def log_message(self, format, *args):
            print(format % args, file=sys.stderr, flush=True)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
