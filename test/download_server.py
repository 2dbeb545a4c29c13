"""A local HTTP server for the download tests: plain, redirecting, truncating and slow routes."""
import collections
import http.server
import threading


class Routes:
    """What the server answers per path, and how often each path was requested."""

    def __init__(self):
        self.table = {}
        self.hits = collections.Counter()
        self.first_hit = collections.defaultdict(threading.Event)

    def serve(self, path, body):
        """Answer ``path`` with ``body`` (bytes) and its Content-Length."""
        self.table[path] = ('body', body)

    def redirect(self, path, location):
        """Answer ``path`` with a 302 to ``location``."""
        self.table[path] = ('redirect', location)

    def truncate(self, path, body, sent):
        """Announce all of ``body`` but close the connection after ``sent`` bytes."""
        self.table[path] = ('truncate', body, sent)

    def hold(self, path, body, gate):
        """Send half of ``body``, then wait for the Event ``gate`` before the rest."""
        self.table[path] = ('hold', body, gate)


class Handler(http.server.BaseHTTPRequestHandler):
    routes = None  # set per server

    def log_message(self, *args):
        pass

    def do_GET(self):
        route = self.routes.table.get(self.path)
        self.routes.hits[self.path] += 1
        self.routes.first_hit[self.path].set()
        if route is None:
            self.send_error(404)
        elif route[0] == 'redirect':
            self.send_response(302)
            self.send_header('Location', route[1])
            self.send_header('Content-Length', '0')
            self.end_headers()
        else:
            self._send_body(route)

    def _send_body(self, route):
        body = route[1]
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        if route[0] == 'truncate':
            self.wfile.write(body[:route[2]])
            return  # HTTP/1.0: the connection closes here
        if route[0] == 'hold':
            self.wfile.write(body[:len(body) // 2])
            self.wfile.flush()
            route[2].wait(60)
            body = body[len(body) // 2:]
        self.wfile.write(body)


def start_server():
    """Start a server on 127.0.0.1; return (routes, base URL, httpd) - call httpd.shutdown()."""
    routes = Routes()
    handler = type('RoutedHandler', (Handler,), {'routes': routes})
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return routes, f'http://127.0.0.1:{httpd.server_address[1]}', httpd
