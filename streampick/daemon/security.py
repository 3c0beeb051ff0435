"""Who may talk to the daemon: loopback-only by default, CurveZMQ when its sockets face the network.

The publish and control sockets bind to 127.0.0.1 unless told otherwise.  Binding anywhere a colleague's
machine can reach (``tcp://*``, ``0.0.0.0``, a LAN address, an interface name) requires CurveZMQ: the
daemon holds a server secret key, clients hold their own key pair plus the server's public key, and only
clients whose public key sits in the ``authorized_clients`` folder are let in.  :func:`check_endpoint` is
the gate the daemon runs on its config; :func:`generate_keys` (``streampick keys DIR``) writes the files.

ZeroMQ consults one ZAP handler per context (``inproc://zeromq.zap.01``), so the server side shares one
``ThreadAuthenticator`` per context among its CURVE sockets (:func:`acquire_authenticator` /
:func:`release_authenticator`, reference-counted); each ``authorized_clients`` folder gets its own ZAP domain.
"""
from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, StreampickError

if TYPE_CHECKING:
    import zmq

LOCAL_TRANSPORTS = ("ipc://", "inproc://")
AUTHENTICATOR_START_S = 5.0


@dataclass(frozen=True)
class CurveServer:
    """Server-side CurveZMQ settings (``security.server_secret_key`` and ``security.authorized_clients``).

    Attributes:
        secret_key_file: the server's secret certificate (``server.key_secret``).
        authorized_clients_dir: a folder of client public certificates (``*.key``); only these get in.
    """

    secret_key_file: Path
    authorized_clients_dir: Path


@dataclass(frozen=True)
class CurveClient:
    """Client-side CurveZMQ settings.

    Attributes:
        secret_key_file: this client's secret certificate (``client.key_secret``).
        server_public_key_file: the daemon's public certificate (``server.key``).
    """

    secret_key_file: Path
    server_public_key_file: Path


def is_loopback(endpoint: str) -> bool:
    """Whether a ZeroMQ endpoint is reachable from this machine only.

    ``ipc://``, ``inproc://``, ``tcp://`` on 127.0.0.0/8, ``localhost`` or ``[::1]`` are local; ``tcp://*``,
    ``0.0.0.0``, ``[::]``, any other address, interface names and other transports are not.

    Args:
        endpoint: a ZeroMQ endpoint such as ``tcp://127.0.0.1:5555``.

    Returns:
        True when only processes on this machine can connect.
    """
    if endpoint.startswith(LOCAL_TRANSPORTS):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    address = endpoint[len("tcp://"):]
    if ";" in address:  # "source;destination" form of connect endpoints: judge conservatively
        return False
    host = address.rpartition(":")[0] if ":" in address else address
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # '*', an interface name, a host name
        return False


def check_endpoint(key: str, endpoint: str, curve: CurveServer | None) -> None:
    """Refuse a network-facing endpoint that has no CurveZMQ protection.

    Args:
        key: the config key the endpoint came from, e.g. ``"publish.endpoint"``.
        endpoint: the endpoint to bind.
        curve: the server's CurveZMQ settings, or None.

    Raises:
        ConfigError: the endpoint is not loopback and ``curve`` is None.
    """
    if curve is None and not is_loopback(endpoint):
        raise ConfigError(f"{key}: {endpoint} is reachable beyond this machine; set "
                          f"security.server_secret_key and security.authorized_clients (CurveZMQ) "
                          f"or bind to 127.0.0.1")


def _load_keys(path: Path, *, what: str, secret: bool) -> tuple[bytes, bytes | None]:
    """(public, secret) keys of a certificate file; ConfigError naming ``what`` if unusable."""
    import zmq.auth

    try:
        public, secret_key = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as err:
        raise ConfigError(f"{what}: {path}: not a readable CurveZMQ certificate ({err})") from None
    if secret and secret_key is None:
        raise ConfigError(f"{what}: {path} holds no secret key (use the .key_secret file)")
    return public, secret_key


def apply_curve_server(socket: zmq.Socket, curve: CurveServer, *, domain: str) -> None:
    """Make ``socket`` a CurveZMQ server; call before ``bind``.

    Clients are checked by the context's authenticator (:func:`acquire_authenticator`, which returned
    ``domain``); without a running authenticator libzmq would admit any client key.

    Args:
        socket: a fresh socket.
        curve: the server settings.
        domain: the ZAP domain :func:`acquire_authenticator` returned for ``curve``.

    Raises:
        ConfigError: the secret key file is missing or not a secret certificate.
    """
    public, secret = _load_keys(curve.secret_key_file, what="security.server_secret_key", secret=True)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_server = True
    socket.zap_domain = domain.encode()


def apply_curve_client(socket: zmq.Socket, curve: CurveClient) -> None:
    """Give ``socket`` a CurveZMQ client identity and the server's public key; call before ``connect``.

    Args:
        socket: a fresh socket.
        curve: the client settings.

    Raises:
        ConfigError: a key file is missing or unusable.
    """
    public, secret = _load_keys(curve.secret_key_file, what="client secret key", secret=True)
    server_public, _ = _load_keys(curve.server_public_key_file, what="server public key", secret=False)
    socket.curve_secretkey = secret
    socket.curve_publickey = public
    socket.curve_serverkey = server_public


class _Authenticators:
    """One running ThreadAuthenticator per context, shared by reference count."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[int, list[Any]] = {}  # id(context) -> [context, authenticator, users]

    def acquire(self, context: zmq.Context, curve: CurveServer) -> str:
        folder = _authorized_folder(curve)
        domain = "streampick-" + hashlib.sha256(os.fsencode(folder)).hexdigest()[:16]
        with self._lock:
            entry = self._entries.get(id(context))
            if entry is None:
                entry = self._entries[id(context)] = [context, _start_authenticator(context), 0]
            entry[1].configure_curve(domain=domain, location=str(folder))
            entry[2] += 1
        return domain

    def release(self, context: zmq.Context) -> None:
        with self._lock:
            entry = self._entries.get(id(context))
            if entry is None:
                return
            entry[2] -= 1
            if entry[2] > 0:
                return
            del self._entries[id(context)]
            entry[1].stop()

    def running(self, context: zmq.Context) -> bool:
        with self._lock:
            return id(context) in self._entries


_AUTHENTICATORS = _Authenticators()


def _start_authenticator(context: zmq.Context) -> Any:
    """A started ThreadAuthenticator for ``context``.

    libzmq frees the inproc endpoints of a just-stopped authenticator (the ZAP endpoint, and its pipe, named
    after an object id that may be reused) in its reaper thread, so binding them again at once can fail with
    EADDRINUSE for a moment: retry until ``AUTHENTICATOR_START_S`` has passed.
    """
    import zmq
    from zmq.auth.thread import ThreadAuthenticator

    deadline = time.monotonic() + AUTHENTICATOR_START_S
    while True:
        authenticator = ThreadAuthenticator(context)
        try:
            authenticator.start()
            return authenticator
        except zmq.ZMQError as err:
            _discard(authenticator)
            if err.errno != zmq.EADDRINUSE:
                raise StreampickError(f"cannot start the CurveZMQ authenticator: {err}") from None
            if time.monotonic() > deadline:
                raise StreampickError("cannot start the CurveZMQ authenticator: another ZAP handler is "
                                      "bound in this zmq context") from None
        time.sleep(0.01)  # poll for the reaper to free the endpoint


def _discard(authenticator: Any) -> None:
    """Close the sockets of an authenticator whose start failed (before its thread existed).

    Left open they would keep the context from terminating; ``stop()`` cannot be used, as it would send
    on a pipe that has no peer and wait forever.
    """
    for name in ("pipe", "zap_socket"):
        socket = getattr(authenticator, name, None)
        if socket is not None:
            socket.close(linger=0)
        setattr(authenticator, name, None)


def _authorized_folder(curve: CurveServer) -> Path:
    """The resolved authorized-clients folder; ConfigError if it holds no client public key."""
    folder = Path(curve.authorized_clients_dir).resolve()
    if not folder.is_dir():
        raise ConfigError(f"security.authorized_clients: {folder} is not a folder")
    if not any(folder.glob("*.key")):
        raise ConfigError(f"security.authorized_clients: {folder} holds no client public keys (*.key); "
                          f"create some with 'streampick keys'")
    return folder


def acquire_authenticator(context: zmq.Context, curve: CurveServer) -> str:
    """Start (or share) the context's authenticator and allow the public keys in ``curve``'s folder.

    The keys are read now: restart the socket's owner after adding or removing client keys.  Pair every
    call with :func:`release_authenticator` after the socket is closed.

    Args:
        context: the context of the CURVE server socket.
        curve: the server settings.

    Returns:
        The ZAP domain to pass to :func:`apply_curve_server`.

    Raises:
        ConfigError: the authorized-clients folder is missing or holds no ``*.key`` file.
    """
    return _AUTHENTICATORS.acquire(context, curve)


def release_authenticator(context: zmq.Context) -> None:
    """Drop one use of the context's authenticator; the last use stops its thread.

    Args:
        context: the context given to :func:`acquire_authenticator`.
    """
    _AUTHENTICATORS.release(context)


def authenticator_running(context: zmq.Context) -> bool:
    """Whether ``context`` has an authenticator started by :func:`acquire_authenticator`.

    Args:
        context: a zmq context.

    Returns:
        True while at least one acquisition is unreleased.
    """
    return _AUTHENTICATORS.running(context)


def generate_keys(folder: Path, *, client_name: str = "client") -> tuple[Path, Path, Path, Path]:
    """Write a server certificate pair (unless one exists) and a new client pair into ``folder``.

    Layout: ``server.key_secret`` (daemon only: ``security.server_secret_key``), ``server.key`` (give to
    clients), ``<client>.key_secret`` (that client only) and ``authorized_clients/<client>.key`` (the folder
    is ``security.authorized_clients``).  Secret files are made readable by their owner only.

    Args:
        folder: where to write; created if absent.
        client_name: the client certificate's name (one pair per client lets a client be revoked alone).

    Returns:
        ``(server_public, server_secret, client_public, client_secret)`` paths; ``client_public`` lies in
        ``folder/authorized_clients``.

    Raises:
        StreampickError: the client's certificate already exists, or the folder cannot be written.
    """
    import zmq.auth

    folder = Path(folder)
    if not client_name or client_name == "server" or os.sep in client_name:
        raise StreampickError(f"client name {client_name!r} is not usable (not empty, not 'server', no '/')")
    authorized = folder / "authorized_clients"
    server_public, server_secret = folder / "server.key", folder / "server.key_secret"
    client_public, client_secret = authorized / f"{client_name}.key", folder / f"{client_name}.key_secret"
    for path in (client_public, client_secret):
        if path.exists():
            raise StreampickError(f"{path} already exists; choose another client name or folder")
    try:
        authorized.mkdir(parents=True, exist_ok=True)
        if not server_secret.exists():
            zmq.auth.create_certificates(folder, "server")
        zmq.auth.create_certificates(folder, client_name)
        shutil.move(folder / f"{client_name}.key", client_public)
        for secret in (server_secret, client_secret):
            secret.chmod(0o600)
    except OSError as err:
        raise StreampickError(f"{folder}: cannot write CurveZMQ certificates ({err})") from None
    return server_public, server_secret, client_public, client_secret


def free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for demos, benchmarks and tests binding random ports)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
