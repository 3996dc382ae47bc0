"""A WebHDFS REST protocol server for the tests: the operations opendal's WebHDFS service calls
(GETFILESTATUS, LISTSTATUS, MKDIRS, CREATE and APPEND with the two-step redirect or
`noredirect=true`, OPEN through a 307 to a "datanode" URL, RENAME, DELETE), storing files in a
directory. Not a NameNode: no blocks, no permissions; it speaks the protocol only.

Usage: python webhdfs_server.py ROOT_DIR PORT_FILE
Binds 127.0.0.1 on a free port, writes the port to PORT_FILE, serves until killed. Each request
is logged to stderr as `METHOD op path`.
"""

import json
import os
import shutil
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

ROOT = os.path.abspath(sys.argv[1])
LOCK = threading.Lock()


def local(hdfs_path):
    parts = [p for p in hdfs_path.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError("bad path")
    return os.path.join(ROOT, *parts)


def status(path, name):
    st = os.stat(path)
    is_dir = os.path.isdir(path)
    return {
        "accessTime": int(st.st_atime * 1000),
        "blockSize": 134217728,
        "childrenNum": len(os.listdir(path)) if is_dir else 0,
        "fileId": st.st_ino,
        "group": "supergroup",
        "length": 0 if is_dir else st.st_size,
        "modificationTime": int(st.st_mtime * 1000),
        "owner": "storagetapper",
        "pathSuffix": name,
        "permission": "755" if is_dir else "644",
        "replication": 0 if is_dir else 1,
        "storagePolicy": 0,
        "type": "DIRECTORY" if is_dir else "FILE",
    }


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, code, body=b"", ctype="application/json", headers=None):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def error(self, code, exc, msg):
        self.reply(
            code,
            {"RemoteException": {"exception": exc, "javaClassName": "java.io." + exc, "message": msg}},
        )

    def body(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            return self.rfile.read(n)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = b""
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return out
                out += self.rfile.read(size)
                self.rfile.readline()
        return b""

    def parse(self):
        u = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
        return unquote(u.path), q

    def handle_any(self, method):
        path, q = self.parse()
        op = q.get("op", "").upper()
        sys.stderr.write(f"{method} {op} {path}\n")
        if path.startswith("/datanode/"):
            return self.datanode(method, path[len("/datanode"):], q, op)
        if not path.startswith("/webhdfs/v1"):
            return self.error(404, "FileNotFoundException", "not a WebHDFS path")
        hpath = path[len("/webhdfs/v1"):] or "/"
        try:
            p = local(hpath)
        except ValueError:
            return self.error(400, "IllegalArgumentException", "bad path")
        with LOCK:
            return self.namenode(method, op, hpath, p, q)

    def redirect(self, op, hpath, q):
        host, port = self.server.server_address[:2]
        loc = f"http://{host}:{port}/datanode{quote(hpath)}?op={op}"
        if "offset" in q:
            loc += f"&offset={q['offset']}"
        if "length" in q:
            loc += f"&length={q['length']}"
        if q.get("noredirect") == "true":
            return self.reply(200, {"Location": loc})
        return self.reply(307, b"", headers={"Location": loc})

    def namenode(self, method, op, hpath, p, q):
        if method == "GET" and op == "GETFILESTATUS":
            if not os.path.exists(p):
                return self.error(404, "FileNotFoundException", f"File does not exist: {hpath}")
            return self.reply(200, {"FileStatus": status(p, "")})
        if method == "GET" and op == "LISTSTATUS":
            if not os.path.exists(p):
                return self.error(404, "FileNotFoundException", f"File {hpath} does not exist.")
            if os.path.isdir(p):
                items = [status(os.path.join(p, n), n) for n in sorted(os.listdir(p))]
            else:
                items = [status(p, "")]
            return self.reply(200, {"FileStatuses": {"FileStatus": items}})
        if method == "GET" and op == "OPEN":
            if not os.path.isfile(p):
                return self.error(404, "FileNotFoundException", f"File does not exist: {hpath}")
            return self.redirect("OPEN", hpath, q)
        if method == "PUT" and op == "MKDIRS":
            if os.path.isfile(p):
                return self.error(403, "FileAlreadyExistsException", f"{hpath} is a file")
            os.makedirs(p, exist_ok=True)
            return self.reply(200, {"boolean": True})
        if method == "PUT" and op == "CREATE":
            if os.path.isdir(p):
                return self.error(403, "FileAlreadyExistsException", f"{hpath} is a directory")
            if os.path.exists(p) and q.get("overwrite", "false") != "true":
                return self.error(403, "FileAlreadyExistsException", f"{hpath} exists")
            return self.redirect("CREATE", hpath, q)
        if method == "POST" and op == "APPEND":
            if not os.path.isfile(p):
                return self.error(404, "FileNotFoundException", f"File does not exist: {hpath}")
            return self.redirect("APPEND", hpath, q)
        if method == "PUT" and op == "RENAME":
            dest = q.get("destination", "")
            try:
                d = local(dest)
            except ValueError:
                return self.error(400, "IllegalArgumentException", "bad destination")
            if not os.path.exists(p) or os.path.exists(d) or not dest.startswith("/"):
                return self.reply(200, {"boolean": False})
            os.makedirs(os.path.dirname(d), exist_ok=True)
            os.rename(p, d)
            return self.reply(200, {"boolean": True})
        if method == "DELETE" and op == "DELETE":
            if not os.path.exists(p):
                return self.reply(200, {"boolean": False})
            if os.path.isdir(p):
                if os.listdir(p) and q.get("recursive", "false") != "true":
                    return self.error(403, "PathIsNotEmptyDirectoryException", f"{hpath} is non empty")
                shutil.rmtree(p)
            else:
                os.remove(p)
            return self.reply(200, {"boolean": True})
        return self.error(400, "UnsupportedOperationException", f"{method} op={op} is not supported")

    def datanode(self, method, hpath, q, op):
        p = local(hpath)
        if method == "GET" and op == "OPEN":
            with open(p, "rb") as f:
                f.seek(int(q.get("offset", 0)))
                n = q.get("length")
                data = f.read(int(n)) if n is not None else f.read()
            return self.reply(200, data, "application/octet-stream")
        data = self.body()
        with LOCK:
            if method == "PUT" and op == "CREATE":
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "wb") as f:
                    f.write(data)
                return self.reply(201, b"", headers={"Location": "hdfs://" + hpath})
            if method == "POST" and op == "APPEND":
                if not os.path.isfile(p):
                    return self.error(404, "FileNotFoundException", f"File does not exist: {hpath}")
                with open(p, "ab") as f:
                    f.write(data)
                return self.reply(200)
        return self.error(400, "UnsupportedOperationException", f"datanode {method} op={op}")

    def do_GET(self):
        self.handle_any("GET")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_POST(self):
        self.handle_any("POST")

    def do_DELETE(self):
        self.handle_any("DELETE")


def main():
    os.makedirs(ROOT, exist_ok=True)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.daemon_threads = True
    tmp = sys.argv[2] + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(srv.server_address[1]))
    os.rename(tmp, sys.argv[2])
    srv.serve_forever()


if __name__ == "__main__":
    main()
