"""The server host's pieces for the network tests: a test CA with a certificate for the server's address, and
Debian's coturn (TURN over UDP, TCP and TLS) sharing its secret with Synapse, as a homeserver admin sets it up."""

from __future__ import annotations

import datetime
import ipaddress
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Certificates:
    ca: Path  # the test CA's certificate (PEM)
    cert: Path  # the server's certificate for its IP address, signed by the CA
    key: Path
    bundle: Path  # the machine's CA bundle plus the test CA, for SSL_CERT_FILE

    def spki_sha256(self) -> str:
        """Base64 SHA-256 of the server certificate's public key, as Chromium's
        ``--ignore-certificate-errors-spki-list`` takes it (trusts that one key, and nothing else)."""
        import base64
        import hashlib

        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        key = x509.load_pem_x509_certificate(self.cert.read_bytes()).public_key()
        der = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(hashlib.sha256(der).digest()).decode()


def make_certificates(directory: Path, address: str) -> Certificates:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intercom network tests CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, address)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            # Python 3.13 verifies strictly (VERIFY_X509_STRICT): a leaf needs its key identifiers and key usage.
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, content_commitment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False),
                           critical=True)
            .sign(ca_key, hashes.SHA256()))
    paths = Certificates(directory / "ca.pem", directory / "server.pem", directory / "server.key",
                         directory / "bundle.pem")
    paths.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths.key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    paths.key.chmod(0o600)
    system = Path("/etc/ssl/certs/ca-certificates.crt")
    paths.bundle.write_bytes((system.read_bytes() if system.exists() else b"") + paths.ca.read_bytes())
    return paths


class Coturn:
    """Debian's ``turnserver`` on ``address``: UDP and TCP on 3478, TLS on 5349, shared-secret auth."""

    def __init__(self, directory: Path, address: str, secret: str, certificates: Certificates | None = None,
                 *, udp: bool = True) -> None:
        self.directory, self.address, self.secret = directory, address, secret
        self.certificates = certificates
        self.udp = udp
        self.log_path = directory / "turnserver.log"
        self.process: subprocess.Popen[bytes] | None = None

    def uris(self) -> list[str]:
        """What the homeserver hands out, in the order an admin usually lists them."""
        uris = [f"turn:{self.address}:3478?transport=udp", f"turn:{self.address}:3478?transport=tcp"]
        if self.certificates:
            uris.append(f"turns:{self.address}:5349?transport=tcp")
        return uris

    def config(self) -> str:
        lines = [
            f"listening-ip={self.address}", f"relay-ip={self.address}", "listening-port=3478",
            "min-port=49160", "max-port=49400", "use-auth-secret", f"static-auth-secret={self.secret}",
            "realm=intercom.test", "no-cli", "fingerprint", "no-multicast-peers", "no-software-attribute",
            # As the homeserver guides advise: never relay into private networks.
            "denied-peer-ip=10.0.0.0-10.255.255.255", "denied-peer-ip=172.16.0.0-172.31.255.255",
            "denied-peer-ip=192.168.0.0-192.168.255.255",
            f"pidfile={self.directory / 'turnserver.pid'}", f"userdb={self.directory / 'turndb'}",
            f"log-file={self.log_path}", "simple-log", "verbose", "no-stdout-log",
        ]
        if not self.udp:
            lines.append("no-udp")
        if self.certificates:
            lines += ["tls-listening-port=5349", f"cert={self.certificates.cert}", f"pkey={self.certificates.key}",
                      "no-dtls"]
        else:
            lines += ["no-tls", "no-dtls"]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> Coturn:
        binary = shutil.which("turnserver")
        if binary is None:
            raise RuntimeError("coturn is not installed (Debian: coturn)")
        self.directory.mkdir(parents=True, exist_ok=True)
        conf = self.directory / "turnserver.conf"
        conf.write_text(self.config())
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                        stderr=(self.directory / "turnserver.stderr").open("wb"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"turnserver exited with {self.process.returncode}: {self.log_tail()}")
            with socket.socket() as probe:
                probe.settimeout(0.2)
                if probe.connect_ex((self.address, 3478)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError(f"turnserver did not listen within {timeout} s: {self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no coturn log)"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
