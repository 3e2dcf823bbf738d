"""Optional CURVE encryption and client authentication (off by default).

The service is the CURVE *server* on both of its sockets, whichever side binds: it holds a secret key, and every
peer (sensors publishing frames, clients subscribing to results) is a CURVE client that knows the service's public
key and presents its own key pair. With an authorized-keys directory, a ZAP authenticator admits only the clients
whose public key files are in it. Key files are the ones ``zmq.auth.create_certificates`` writes
(``NAME.key`` public, ``NAME.key_secret`` secret). Without an authorized-keys directory any client that knows the
service's public key may connect: traffic is encrypted but not access-controlled.
"""

from __future__ import annotations

import os
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator


def _keys(path) -> tuple[bytes, bytes]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such key file")
    public, secret = zmq.auth.load_certificate(path)
    if secret is None:
        raise ValueError(f"{path}: a secret key file (NAME.key_secret) is needed here, not a public key")
    return public, secret


def make_server(sock: zmq.Socket, secret_file) -> None:
    public, secret = _keys(secret_file)
    sock.curve_secretkey, sock.curve_publickey, sock.curve_server = secret, public, True


def make_client(sock: zmq.Socket, secret_file, server_public_file) -> None:
    public, secret = _keys(secret_file)
    sock.curve_secretkey, sock.curve_publickey = secret, public
    sock.curve_serverkey = zmq.auth.load_certificate(Path(server_public_file))[0]


def start_authenticator(ctx: zmq.Context, authorized_dir):
    """Admit only CURVE clients whose public keys are in ``authorized_dir``. Returns the running authenticator."""
    if not Path(authorized_dir).is_dir():
        raise FileNotFoundError(f"{authorized_dir}: no such authorized-keys directory")
    auth = ThreadAuthenticator(ctx)
    auth.start()
    auth.configure_curve(domain="*", location=str(authorized_dir))
    return auth


def create_keys(directory, names: list[str]) -> list[tuple[Path, Path]]:
    """A CURVE key pair per name in ``directory`` (created if missing): ``NAME.key`` (public, world-readable) and
    ``NAME.key_secret`` (readable by its owner only). Refuses to overwrite an existing pair. Returns the paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    made = []
    for name in names:
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"key name {name!r}: use letters, digits, '-' and '_' only")
        public, secret = directory / f"{name}.key", directory / f"{name}.key_secret"
        if public.exists() or secret.exists():
            raise FileExistsError(f"{secret}: a key pair of that name exists; remove it first to replace it")
        old = os.umask(0o077)  # the secret file is never readable by others, not even for a moment
        try:
            zmq.auth.create_certificates(directory, name)
        finally:
            os.umask(old)
        secret.chmod(0o600)
        public.chmod(0o644)
        made.append((public, secret))
    return made
