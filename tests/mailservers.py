"""Real mail servers for the e-mail channel's tests.

* :func:`start_imap` runs Debian's Dovecot (``dovecot-imapd``) in the foreground with a
  configuration written into a private directory: IMAP only, on a free loopback port,
  plaintext logins against a passwd-file, maildirs under that directory, and optionally
  IMAP over implicit TLS on a second port.
* :func:`start_smtp` runs an ``aiosmtpd`` SMTP server in a background thread that records
  every message it accepts; it speaks plain SMTP, STARTTLS or implicit TLS, can require
  AUTH (LOGIN/PLAIN) and can be told to refuse the next DATA commands.
* :func:`make_tls_files` writes a throwaway certificate authority and a server
  certificate for ``localhost``/``127.0.0.1`` signed by it (clients trust ``ca_path``).

Nothing here imports pytest; the fixtures wrapping these live with the tests.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import email
import email.policy
import imaplib
import ipaddress
import os
import pwd
import re
import secrets
import shutil
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any, Literal, TypeAlias

from tests.servers import (
    LOOPBACK,
    ServiceStartError,
    _allow_traversal,
    _PortTaken,
    _spawn_until_ready,
    _terminate,
    free_port,
)

__all__ = [
    "DEFAULT_MAIL_USERS",
    "ImapMessage",
    "ReceivedMessage",
    "RunningImap",
    "RunningSmtp",
    "SmtpMode",
    "TlsFiles",
    "make_tls_files",
    "start_imap",
    "start_smtp",
]

# Accounts every IMAP server starts with: address -> password.
DEFAULT_MAIL_USERS: Mapping[str, str] = {
    "bot@example.test": "bot-secret",
    "alice@example.test": "alice-secret",
}

_CLIENT_TIMEOUT = 10.0

# ------------------------------------------------------------------------ certificates


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of a throwaway CA and a server certificate it signed.

    ``cert_path`` holds the server certificate followed by the CA certificate (a full
    chain); ``key_path`` its private key; clients verify against ``ca_path``.
    """

    ca_path: Path
    cert_path: Path
    key_path: Path

    def server_context(self) -> ssl.SSLContext:
        """A TLS server context presenting the certificate (no client certificates)."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_path, self.key_path)
        return context

    def client_context(self) -> ssl.SSLContext:
        """A client context that trusts only this CA, with hostname checks on."""
        return ssl.create_default_context(cafile=str(self.ca_path))


def make_tls_files(
    directory: Path,
    hostnames: Sequence[str] = ("localhost",),
    addresses: Sequence[str] = (LOOPBACK,),
) -> TlsFiles:
    """Write a new CA and a server certificate for ``hostnames``/``addresses`` into ``directory``.

    The certificates carry the extensions strict verifiers want (key usages, key
    identifiers, a server-auth EKU), so ``ssl.create_default_context(cafile=ca_path)``
    accepts them under Python 3.13's ``VERIFY_X509_STRICT`` too.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(days=1)
    not_after = now + datetime.timedelta(days=30)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"botloom test CA {secrets.token_hex(4)}")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in hostnames]
    names += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
    common_name = hostnames[0] if hostnames else addresses[0]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    files.ca_path.write_bytes(ca_pem)
    files.cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + ca_pem)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(files.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(key_pem)
    return files


# ---------------------------------------------------------------------------- dovecot


# (uid, flags, raw RFC 822 bytes) of one message, as :meth:`RunningImap.messages` lists them.
ImapMessage: TypeAlias = tuple[int, set[str], bytes]

# Dovecot settings values are not quoted here: keep the paths to harmless characters.
_SAFE_PATH = re.compile(r"^[\w./+@-]+$")
_SAFE_ADDRESS = re.compile(r"^[\w.+-]+@[\w.-]+$")
# Unix socket paths are limited to 108 bytes; the longest Dovecot socket name is ~25.
_MAX_RUN_DIR = 80
_UNPRIVILEGED = "nobody"
_FETCH_UID = re.compile(rb"UID (\d+)")
_FETCH_FLAGS = re.compile(rb"FLAGS \(([^)]*)\)")
_APPEND_UID = re.compile(rb"\[APPENDUID \d+ (\d+)\]")


@dataclass(frozen=True)
class _Identity:
    """Accounts the Dovecot processes use: mail (uid/gid), internal and login users."""

    mail_uid: int
    mail_gid: int
    internal_user: str
    internal_group: str
    login_user: str
    as_root: bool


def _dovecot_identity() -> _Identity:
    """The accounts to configure: the current user, or unprivileged ones when root.

    Dovecot refuses UID 0 for mail users, so as root mail belongs to ``nobody`` and the
    internal/login processes use the ``dovecot``/``dovenull`` accounts the Debian package
    creates (``nobody`` where they are missing).
    """
    import grp

    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        group = grp.getgrgid(os.getegid()).gr_name
        return _Identity(entry.pw_uid, os.getegid(), entry.pw_name, group, entry.pw_name, as_root=False)

    def account(name: str) -> pwd.struct_passwd:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            return pwd.getpwnam(_UNPRIVILEGED)

    mail = pwd.getpwnam(_UNPRIVILEGED)
    internal = account("dovecot")
    login = account("dovenull")
    internal_group = grp.getgrgid(internal.pw_gid).gr_name
    return _Identity(mail.pw_uid, mail.pw_gid, internal.pw_name, internal_group, login.pw_name, as_root=True)


def _dovecot_binary() -> str:
    binary = shutil.which("dovecot") or "/usr/sbin/dovecot"
    if not Path(binary).is_file():
        raise ServiceStartError("dovecot is not installed (Debian: apt-get install dovecot-imapd)")
    return binary


def _dovecot_config(
    *,
    base_dir: Path,
    run_dir: Path,
    port: int,
    tls_port: int,
    tls: TlsFiles | None,
    identity: _Identity,
    greeting: str,
) -> str:
    """The whole dovecot.conf: nothing is read from /etc/dovecot."""
    if tls is not None:
        ssl_settings = f"ssl = yes\nssl_cert = <{tls.cert_path}\nssl_key = <{tls.key_path}\nssl_min_protocol = TLSv1.2"
        imaps = f"address = {LOOPBACK}\n    port = {tls_port}\n    ssl = yes"
    else:
        ssl_settings = "ssl = no"
        imaps = "port = 0"
    # Rootless Dovecot cannot chroot (HowTo/Rootless); as root the defaults stay.
    no_chroot = (
        ""
        if identity.as_root
        else "\n".join(
            f"service {name} {{\n  chroot =\n}}"
            for name in ("anvil", "imap-login", "imap-urlauth-login", "ipc", "old-stats", "aggregator", "director")
        )
    )
    return f"""\
# Written by tests/mailservers.py for one test session.
protocols = imap
listen = {LOOPBACK}
base_dir = {run_dir}
state_dir = {base_dir / "state"}
instance_name = botloom-test-{port}
log_path = {base_dir / "dovecot.log"}
info_log_path = {base_dir / "dovecot.log"}
login_greeting = {greeting}
shutdown_clients = yes

{ssl_settings}
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
auth_failure_delay = 0

default_internal_user = {identity.internal_user}
default_internal_group = {identity.internal_group}
default_login_user = {identity.login_user}
first_valid_uid = {identity.mail_uid}
last_valid_uid = 0

passdb {{
  driver = passwd-file
  # One file per account: Dovecot stats a passwd-file at most once a second, so
  # a shared file would hide accounts added in the same second; new files are read at once.
  args = scheme=PLAIN username_format=%u {base_dir / "passwd.d"}/%u
}}
userdb {{
  driver = static
  args = uid={identity.mail_uid} gid={identity.mail_gid} home={base_dir / "mail"}/%u
}}
mail_location = maildir:~/Maildir
mail_fsync = never
namespace inbox {{
  inbox = yes
  separator = /
}}

service imap-login {{
  inet_listener imap {{
    address = {LOOPBACK}
    port = {port}
  }}
  inet_listener imaps {{
    {imaps}
  }}
}}
service anvil {{
  # No growing delays for the same client after failed logins (tests try wrong passwords).
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service stats {{
  # The mail processes run as another user than the stats service.
  unix_listener stats-writer {{
    mode = 0666
  }}
}}
{no_chroot}
"""


def _check(response: tuple[str, list[Any]], what: str) -> list[Any]:
    status, data = response
    if status != "OK":
        raise imaplib.IMAP4.error(f"{what} failed: {status} {data!r}")
    return data


@dataclass
class RunningImap:
    """A Dovecot IMAP server at :attr:`host`:`port` (plain IMAP, plaintext logins).

    :attr:`users` maps each account's address (its login name) to its password.
    With TLS, :attr:`tls_port` speaks IMAP over implicit TLS with a certificate for
    ``localhost``/``127.0.0.1`` that clients verify against :attr:`ca_path`.
    """

    host: str
    port: int
    users: dict[str, str]
    base_dir: Path
    log_path: Path
    tls_port: int | None = None
    tls: TlsFiles | None = None
    _process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _run_dir: Path | None = field(default=None, repr=False)
    _users_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def pid(self) -> int | None:
        """The master process id, or None when stopped."""
        return self._process.pid if self._process is not None else None

    @property
    def ca_path(self) -> Path | None:
        """The CA certificate to trust for :attr:`tls_port`, or None without TLS."""
        return self.tls.ca_path if self.tls is not None else None

    def add_user(self, address: str | None = None, password: str | None = None) -> tuple[str, str]:
        """Create an account (a fresh address and password unless given); return both.

        Each account has its own passwd-file, so the new one works at once.
        """
        address = address or f"user-{secrets.token_hex(6)}@example.test"
        password = password or secrets.token_urlsafe(12)
        with self._users_lock:
            if address in self.users:
                raise ValueError(f"{address} already exists")
            _write_account(self.base_dir / "passwd.d", address, password)
            self.users[address] = password
        return address, password

    @contextlib.contextmanager
    def imap(self, user: str, *, tls: bool = False) -> Iterator[imaplib.IMAP4]:
        """An ``imaplib`` connection logged in as ``user`` (over TLS if asked), logged out afterwards."""
        if tls:
            if self.tls is None or self.tls_port is None:
                raise ValueError("this server was started without TLS")
            conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                self.host, self.tls_port, ssl_context=self.tls.client_context(), timeout=_CLIENT_TIMEOUT
            )
        else:
            conn = imaplib.IMAP4(self.host, self.port, timeout=_CLIENT_TIMEOUT)
        try:
            _check(conn.login(user, self.users[user]), f"LOGIN {user}")
            yield conn
        finally:
            try:
                conn.logout()
            except (OSError, imaplib.IMAP4.error):
                with contextlib.suppress(OSError):
                    conn.shutdown()

    def append(self, user: str, raw: bytes, mailbox: str = "INBOX", seen: bool = False) -> int:
        """APPEND the RFC 822 message ``raw`` to ``user``'s ``mailbox`` (created if missing); its UID.

        ``imaplib`` turns bare LF line endings into CRLF on the way.
        """
        flags = r"(\Seen)" if seen else None
        with self.imap(user) as conn:
            status, data = conn.append(_quote(mailbox), flags, None, raw)
            if status != "OK" and b"TRYCREATE" in b" ".join(d for d in data if isinstance(d, bytes)):
                _check(conn.create(_quote(mailbox)), f"CREATE {mailbox}")
                status, data = conn.append(_quote(mailbox), flags, None, raw)
            _check((status, data), f"APPEND to {mailbox}")
        match = _APPEND_UID.search(data[0] if data and isinstance(data[0], bytes) else b"")
        if match is None:
            raise imaplib.IMAP4.error(f"APPEND gave no APPENDUID: {data!r}")
        return int(match.group(1))

    def messages(self, user: str, mailbox: str = "INBOX") -> list[ImapMessage]:
        """Every message in ``user``'s ``mailbox`` as (uid, flags, raw), oldest first.

        Read with EXAMINE and BODY.PEEK, so nothing is flagged by looking. The
        session-dependent ``\\Recent`` flag is left out of ``flags``.
        """
        with self.imap(user) as conn:
            _check(conn.select(_quote(mailbox), readonly=True), f"EXAMINE {mailbox}")
            found = _check(conn.uid("SEARCH", "ALL"), "UID SEARCH")
            uids = b" ".join(found).split()
            if not uids:
                return []
            data = _check(conn.uid("FETCH", b",".join(uids).decode(), "(UID FLAGS BODY.PEEK[])"), "UID FETCH")
        result: list[ImapMessage] = []
        for index, item in enumerate(data):
            if not isinstance(item, tuple):
                continue
            header, raw = item
            # Metadata may follow the literal in the next element, e.g. b" FLAGS (\\Seen))".
            after = data[index + 1] if index + 1 < len(data) and isinstance(data[index + 1], bytes) else b""
            meta = header + b" " + after
            uid = _FETCH_UID.search(meta)
            flags = _FETCH_FLAGS.search(meta)
            if uid is None or flags is None:
                raise imaplib.IMAP4.error(f"unexpected FETCH response: {meta!r}")
            names = set(flags.group(1).decode().split()) - {r"\Recent"}
            result.append((int(uid.group(1)), names, bytes(raw)))
        return sorted(result, key=lambda message: message[0])

    def clear(self, user: str, mailbox: str = "INBOX") -> None:
        """Delete every message in ``user``'s ``mailbox``."""
        with self.imap(user) as conn:
            _check(conn.select(_quote(mailbox)), f"SELECT {mailbox}")
            if b" ".join(_check(conn.uid("SEARCH", "ALL"), "UID SEARCH")).split():
                _check(conn.uid("STORE", "1:*", "+FLAGS.SILENT", r"(\Deleted)"), "UID STORE")
                _check(conn.expunge(), "EXPUNGE")
            conn.close()

    def stop(self) -> None:
        """Shut Dovecot down (SIGTERM to the master, which stops its children); idempotent."""
        if self._process is not None:
            atexit.unregister(self.stop)
            _terminate(self._process, signal.SIGTERM)
            self._process = None
            if self._run_dir is not None and not self._run_dir.is_relative_to(self.base_dir):
                shutil.rmtree(self._run_dir, ignore_errors=True)

    def __enter__(self) -> RunningImap:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def _quote(mailbox: str) -> str:
    escaped = mailbox.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def _write_account(directory: Path, address: str, password: str) -> None:
    """Write ``address``'s own passwd-file (atomically: Dovecot must never read half of it)."""
    if not _SAFE_ADDRESS.match(address) or re.search(r"[:\s]", password):
        raise ValueError(f"unusable account {address!r} (passwords may not contain ':' or whitespace)")
    path = directory / address
    temporary = directory / f".{address}.new"
    temporary.write_text(f"{address}:{{PLAIN}}{password}\n")
    temporary.chmod(0o644)  # read by the auth process, which runs as the internal user
    temporary.replace(path)


def start_imap(
    base_dir: Path,
    *,
    users: Mapping[str, str] | None = None,
    tls: bool = False,
) -> RunningImap:
    """Start Dovecot (IMAP only) on a free loopback port with its files in ``base_dir``.

    ``users`` (address -> password) defaults to :data:`DEFAULT_MAIL_USERS`. With
    ``tls``, Dovecot also listens for IMAP over implicit TLS on ``tls_port`` (and then
    offers STARTTLS on the plain port too); without it the config says ``ssl = no``.

    As root, the mail processes run as ``nobody``, which must be able to traverse to
    ``base_dir``: use a directory of its own (``tempfile.mkdtemp()``), not pytest's
    ``tmp_path``, whose parents a concurrent pytest session may reset to 0700.
    The server's log is ``base_dir / "dovecot.log"``; start failures quote its tail.
    """
    binary = _dovecot_binary()
    base_dir = base_dir.resolve()
    base_dir.mkdir(parents=True, exist_ok=True)
    if not _SAFE_PATH.match(str(base_dir)):
        raise ValueError(f"Dovecot's base directory may only contain [A-Za-z0-9_./+@-]: {base_dir}")
    identity = _dovecot_identity()
    accounts = dict(DEFAULT_MAIL_USERS if users is None else users)
    log_path = base_dir / "dovecot.log"
    config_path = base_dir / "dovecot.conf"
    mail_dir = base_dir / "mail"
    (base_dir / "state").mkdir(exist_ok=True)
    mail_dir.mkdir(exist_ok=True)
    (base_dir / "passwd.d").mkdir(mode=0o755, exist_ok=True)
    for address, password in accounts.items():
        _write_account(base_dir / "passwd.d", address, password)
    run_dir = base_dir / "run"
    if len(str(run_dir)) > _MAX_RUN_DIR:
        import tempfile

        run_dir = Path(tempfile.mkdtemp(prefix="botloom-dovecot-"))
    run_dir.mkdir(exist_ok=True)
    run_dir.chmod(0o755)
    if identity.as_root:
        # Mail processes (nobody) and internal ones (dovecot) reach into base_dir.
        _allow_traversal(mail_dir)
        _allow_traversal(run_dir)
        os.chown(mail_dir, identity.mail_uid, identity.mail_gid)
    mail_dir.chmod(0o700)
    files = make_tls_files(base_dir / "tls") if tls else None
    greeting = f"botloom-test-imap-{secrets.token_hex(6)}"
    ports: dict[int, int] = {}

    def command(port: int) -> list[str]:
        ports[port] = free_port() if tls else 0
        config_path.write_text(
            _dovecot_config(
                base_dir=base_dir,
                run_dir=run_dir,
                port=port,
                tls_port=ports[port],
                tls=files,
                identity=identity,
                greeting=greeting,
            )
        )
        return [binary, "-F", "-c", str(config_path)]

    def probe(port: int, process: subprocess.Popen[bytes]) -> bool:
        try:
            conn = imaplib.IMAP4(LOOPBACK, port, timeout=2)
        except (OSError, imaplib.IMAP4.abort):  # not listening yet, or closed on us
            return False
        except imaplib.IMAP4.error as exc:  # not an IMAP server at all
            raise _PortTaken from exc
        try:
            welcome = conn.welcome
        finally:
            conn.shutdown()
        if greeting.encode() not in welcome:
            raise _PortTaken
        return True

    try:
        process, port = _spawn_until_ready("dovecot", command, log_path, probe, signal.SIGTERM)
    except BaseException as exc:
        if not run_dir.is_relative_to(base_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        if isinstance(exc, ServiceStartError):
            raise ServiceStartError(f"{exc}\nconfig {config_path}") from None
        raise
    server = RunningImap(
        host=LOOPBACK,
        port=port,
        users=accounts,
        base_dir=base_dir,
        log_path=log_path,
        tls_port=ports[port] or None,
        tls=files,
        _process=process,
        _run_dir=run_dir,
    )
    atexit.register(server.stop)
    return server


# ---------------------------------------------------------------------------- aiosmtpd


SmtpMode: TypeAlias = Literal["plain", "starttls", "tls"]


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the SMTP server accepted.

    ``raw`` is the DATA exactly as received (CRLF line endings); ``message`` is it
    parsed with ``email.policy.default``. ``login`` is the AUTH user, if any; ``tls``
    whether the session was encrypted (implicit TLS or after STARTTLS).
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    raw: bytes
    message: EmailMessage
    login: str | None
    tls: bool


@dataclass
class _Failure:
    remaining: int
    code: int
    message: str


class _Recorder:
    """aiosmtpd handler and authenticator: records messages, injects DATA failures."""

    def __init__(
        self, username: str | None, password: str | None, *, check_auth_on_mail: bool, implicit_tls: bool
    ) -> None:
        self.username = username
        self.password = password
        self.check_auth_on_mail = check_auth_on_mail
        self.implicit_tls = implicit_tls
        self.condition = threading.Condition()
        self.received: list[ReceivedMessage] = []
        self.failures: list[_Failure] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        """Authenticator: accept exactly the configured login and password."""
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if (
            isinstance(auth_data, LoginPassword)
            and self.username is not None
            and self.password is not None
            and auth_data.login == self.username.encode()
            and auth_data.password == self.password.encode()
        ):
            return AuthResult(success=True, auth_data=self.username)
        return AuthResult(success=False, handled=False)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]) -> str:
        """Refuse unauthenticated senders where aiosmtpd's ``auth_required`` cannot be used."""
        if self.check_auth_on_mail and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        """Record the message, unless a failure was scheduled with ``fail_next``."""
        with self.condition:
            if self.failures:
                failure = self.failures[0]
                failure.remaining -= 1
                if failure.remaining <= 0:
                    self.failures.pop(0)
                return f"{failure.code} {failure.message}"
        raw = bytes(envelope.original_content or envelope.content)
        # Parsed with LF line endings, so get_content() gives text without "\r".
        parsed = email.message_from_bytes(raw.replace(b"\r\n", b"\n"), policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        login = session.auth_data if isinstance(session.auth_data, str) else None
        received = ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            raw=raw,
            message=parsed,
            login=login,
            tls=self.implicit_tls or session.ssl is not None,
        )
        with self.condition:
            self.received.append(received)
            self.condition.notify_all()
        return "250 2.0.0 OK: queued"


class RunningSmtp:
    """An aiosmtpd server at :attr:`host`:`port`; see :func:`start_smtp`."""

    def __init__(
        self,
        controller: Any,
        recorder: _Recorder,
        mode: SmtpMode,
        tls: TlsFiles | None,
        username: str | None,
        password: str | None,
        own_dir: Path | None = None,
    ) -> None:
        self._controller = controller
        self._own_dir = own_dir
        self._recorder = recorder
        self.host: str = LOOPBACK
        self.port: int = controller.port
        self.mode: SmtpMode = mode
        self.tls = tls
        self.username = username
        self.password = password

    @property
    def ca_path(self) -> Path | None:
        """The CA certificate a client must trust (None in plain mode)."""
        return self.tls.ca_path if self.tls is not None else None

    def client_context(self) -> ssl.SSLContext:
        """A client TLS context that trusts this server's certificate."""
        if self.tls is None:
            raise ValueError("this SMTP server was started without TLS")
        return self.tls.client_context()

    @property
    def received(self) -> list[ReceivedMessage]:
        """A snapshot of the messages accepted so far, oldest first."""
        with self._recorder.condition:
            return list(self._recorder.received)

    def clear(self) -> None:
        """Forget received messages and scheduled failures."""
        with self._recorder.condition:
            self._recorder.received.clear()
            self._recorder.failures.clear()

    def fail_next(self, count: int = 1, code: int = 451, message: str = "4.3.0 try again later") -> None:
        """Answer the next ``count`` DATA commands with ``code message`` instead of accepting.

        Use a 4xx code for a temporary failure, 5xx (e.g. 550) for a permanent one.
        Calls queue up: ``fail_next(1, 451)`` then ``fail_next(1, 550)`` fails twice.
        """
        if count < 1 or not 400 <= code <= 599:
            raise ValueError("count must be positive and code a 4xx or 5xx SMTP reply code")
        with self._recorder.condition:
            self._recorder.failures.append(_Failure(count, code, message))

    def wait_for(self, count: int = 1, timeout: float = 10.0) -> list[ReceivedMessage]:
        """Block until at least ``count`` messages were received; all of them.

        Raises :class:`TimeoutError` (naming how many arrived) after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        with self._recorder.condition:
            while len(self._recorder.received) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"expected {count} message(s) within {timeout}s, got {len(self._recorder.received)}"
                    )
                self._recorder.condition.wait(remaining)
            return list(self._recorder.received)

    def stop(self) -> None:
        """Stop the server thread; idempotent."""
        if self._controller is not None:
            atexit.unregister(self.stop)
            self._controller.stop()
            self._controller = None
            if self._own_dir is not None:
                shutil.rmtree(self._own_dir, ignore_errors=True)

    def __enter__(self) -> RunningSmtp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def start_smtp(
    mode: SmtpMode = "plain",
    *,
    username: str | None = None,
    password: str | None = None,
    tls_dir: Path | None = None,
) -> RunningSmtp:
    """Start an SMTP server on a free loopback port; use it as a context manager.

    * ``"plain"``: no TLS at all; AUTH (if credentials are given) works over plain text.
    * ``"starttls"``: the same port offers STARTTLS and requires it before MAIL and AUTH.
    * ``"tls"``: implicit TLS from the first byte (SMTPS).

    With ``username`` and ``password`` the server offers AUTH PLAIN and LOGIN and
    refuses MAIL without a successful login. The certificate (for ``localhost`` and
    127.0.0.1) is written to ``tls_dir``, or a temporary directory removed on stop.
    """
    from aiosmtpd.controller import Controller

    if (username is None) != (password is None):
        raise ValueError("give both username and password, or neither")
    if mode not in ("plain", "starttls", "tls"):
        raise ValueError(f"unknown SMTP mode {mode!r}")
    credentials = username is not None
    own_dir: Path | None = None
    files: TlsFiles | None = None
    if mode != "plain":
        if tls_dir is None:
            import tempfile

            own_dir = tls_dir = Path(tempfile.mkdtemp(prefix="botloom-smtp-tls-"))
        files = make_tls_files(tls_dir)

    # aiosmtpd's auth_require_tls only counts STARTTLS (it would hide AUTH under implicit
    # TLS), and auth_required without it warns; so outside STARTTLS mode AUTH is allowed
    # on any connection and the handler itself refuses MAIL before a login.
    recorder = _Recorder(
        username,
        password,
        check_auth_on_mail=credentials and mode != "starttls",
        implicit_tls=mode == "tls",
    )
    options: dict[str, Any] = {
        "server_hostname": "localhost",
        "ready_timeout": 10.0,
        "auth_require_tls": mode == "starttls",
        "auth_required": credentials and mode == "starttls",
        "authenticator": recorder if credentials else None,
    }
    if mode == "starttls":
        assert files is not None
        options |= {"tls_context": files.server_context(), "require_starttls": True}
    elif mode == "tls":
        assert files is not None
        options["ssl_context"] = files.server_context()

    last_error: Exception | None = None
    for _ in range(3):
        controller = Controller(recorder, hostname=LOOPBACK, port=free_port(), **options)
        try:
            controller.start()
        except OSError as exc:  # the port was taken between picking and binding
            last_error = exc
            if controller._thread is not None:
                controller._thread.join()
            controller.loop.close()
            continue
        break
    else:
        if own_dir is not None:
            shutil.rmtree(own_dir, ignore_errors=True)
        raise ServiceStartError(f"aiosmtpd found no free port: {last_error}")

    server = RunningSmtp(controller, recorder, mode, files, username, password, own_dir)
    atexit.register(server.stop)
    return server
