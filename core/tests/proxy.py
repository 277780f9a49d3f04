"""A TCP proxy to the database server that a test can cut: the network failing, for real."""

from __future__ import annotations

import socket
import threading


class TcpProxy:
    """Forward a free 127.0.0.1 port to the database server until the test cuts it."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._cut = threading.Event()
        self.resume()

    def resume(self) -> None:
        """Accept connections (again, on the same port: the database is back)."""
        self._cut.clear()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.listener.settimeout(0.1)
        self.port = self.listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept_loop, name="test-db-proxy", daemon=True)
        self._acceptor.start()

    def cut(self) -> None:
        """Refuse new connections and drop the open ones, like a database that went away."""
        self._cut.set()
        self.listener.close()
        self._acceptor.join(timeout=5)
        with self._lock:
            for sock in self._sockets:
                _shut(sock)

    def stop(self) -> None:
        self.cut()
        for thread in self._threads:
            thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._cut.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
                for source, sink in ((client, upstream), (upstream, client)):
                    thread = threading.Thread(target=_pump, args=(source, sink), daemon=True)
                    self._threads.append(thread)
                    thread.start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _shut(source)
        _shut(sink)


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
