"""TLS on the pool's listeners, with certificates a test CA (trustme) makes: HTTPS that clients verify, workers
that advertise https and that the proxy verifies, plain HTTP and a wrong CA refused, a renewed certificate
loaded on SIGHUP without dropping a connection."""

from __future__ import annotations

import signal
import socket
import ssl
from pathlib import Path

import numpy as np
import pytest
import requests
import trustme
from helpers import encode, wait_until, write_sleepy_model

from visionpool.client import Client, ConnectionFailed

pytestmark = pytest.mark.slow  # every test here starts processes

IMAGE = encode(np.zeros((8, 8, 3), np.uint8), "PNG")


class Certificates:
    """A test CA, and a certificate for 127.0.0.1 it signed, in PEM files a service reads."""

    def __init__(self, folder: Path) -> None:
        self.authority = trustme.CA()
        self.ca, self.cert, self.key = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
        self.authority.cert_pem.write_to_path(str(self.ca))
        self.other_ca = folder / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(self.other_ca))
        self.issue()

    def issue(self) -> None:
        """A (new) certificate for 127.0.0.1 into cert.pem and key.pem."""
        issued = self.authority.issue_cert("127.0.0.1", "localhost")
        issued.private_key_pem.write_to_path(str(self.key))
        self.cert.write_bytes(b"".join(blob.bytes() for blob in issued.cert_chain_pems))

    def flags(self) -> list[str]:
        return ["--tls-cert", str(self.cert), "--tls-key", str(self.key), "--tls-ca", str(self.ca)]


def status(url: str, ca: Path) -> int:
    try:
        return requests.get(url, verify=str(ca), timeout=2).status_code
    except requests.RequestException:
        return 0


def serial(port: int, ca: Path) -> tuple[ssl.SSLSocket, int]:
    """A TLS connection to the port, and the serial number of the certificate it was shown."""
    context = ssl.create_default_context(cafile=str(ca))
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=5), server_hostname="127.0.0.1")
    return sock, int(sock.getpeercert()["serialNumber"], 16)


def test_an_https_pool(start_proxy, start_worker, tmp_path: Path) -> None:
    certs = Certificates(tmp_path)
    proxy = start_proxy("--registry-token", "t", *certs.flags(), ready=False)
    url = f"https://127.0.0.1:{proxy.port}"
    wait_until(lambda: status(url + "/healthz", certs.ca) == 200, 30)
    start_worker(
        "--model", "sleepy", "--model-repository", str(write_sleepy_model(tmp_path / "models", 0.01)),
        "--registry", "local", "--registry-url", url, "--registry-token", "t", *certs.flags(), ready=False,
    )  # fmt: skip
    wait_until(lambda: len(requests.get(url + "/workers", verify=str(certs.ca), timeout=5).json()["workers"]) == 1, 30)
    [worker] = requests.get(url + "/workers", verify=str(certs.ca), timeout=5).json()["workers"]
    assert worker["url"].startswith("https://127.0.0.1:")  # it registered over https and advertises https
    for mode in ("proxy", "p2p"):  # through the proxy, which verifies the worker; straight to the worker
        with Client(url, mode=mode, verify=str(certs.ca)) as client:
            assert client.predict(IMAGE).predictions[0].label in ("a", "b", "c")
    with pytest.raises(ConnectionFailed), Client(url, mode="proxy", verify=str(certs.other_ca), retries=0) as client:
        client.predict(IMAGE)  # a certificate this CA did not sign: refused by the client
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as plain:
        plain.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # plain HTTP to a TLS port gets no HTTP answer
        assert not plain.recv(4096).startswith(b"HTTP/1.1 200")

    kept, first = serial(proxy.port, certs.ca)
    certs.issue()  # renewed on disk
    proxy.proc.send_signal(signal.SIGHUP)
    wait_until(lambda: serial(proxy.port, certs.ca)[1] != first, 10)  # new handshakes see the new certificate
    kept.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # and the connection opened before still works
    assert kept.recv(4096).startswith(b"HTTP/1.1 200")
    kept.close()


def test_grpc_over_tls(start_worker, tmp_path: Path) -> None:
    import tritonclient.grpc as triton_grpc
    from helpers import free_port

    certs = Certificates(tmp_path)
    grpc_port = free_port()
    worker = start_worker(
        "--model", "sleepy", "--model-repository", str(write_sleepy_model(tmp_path / "models", 0.01)),
        "--grpc-port", str(grpc_port), "--tls-cert", str(certs.cert), "--tls-key", str(certs.key), ready=False,
    )  # fmt: skip
    wait_until(lambda: status(f"https://127.0.0.1:{worker.port}/readyz", certs.ca) == 200, 30)
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}", ssl=True, root_certificates=str(certs.ca))
    inputs = [triton_grpc.InferInput("IMAGE", [1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([IMAGE], dtype=np.object_))
    assert client.infer("sleepy", inputs).as_numpy("COUNT").tolist() == [1]


def test_workers_that_ask_for_client_certificates(start_proxy, start_worker, tmp_path: Path) -> None:
    """Mutual TLS: a worker given --tls-client-ca serves the proxy (which shows its certificate) and clients with a
    certificate the CA signed, over HTTPS and gRPC; a client without one fails the handshake."""
    import tritonclient.grpc as triton_grpc
    from helpers import free_port

    certs = Certificates(tmp_path)
    proxy = start_proxy("--registry-token", "t", *certs.flags(), "--tls-client-ca", str(certs.ca), ready=False)
    url = f"https://127.0.0.1:{proxy.port}"
    grpc_port = free_port()
    start_worker(
        "--model", "sleepy", "--model-repository", str(write_sleepy_model(tmp_path / "models", 0.01)),
        "--registry", "local", "--registry-url", url, "--registry-token", "t", *certs.flags(),
        "--tls-client-ca", str(certs.ca), "--grpc-port", str(grpc_port), ready=False,
    )  # fmt: skip
    mine = (str(certs.cert), str(certs.key))

    def workers() -> list[dict[str, str]]:
        try:
            answer = requests.get(url + "/workers", verify=str(certs.ca), cert=mine, timeout=5)
        except requests.RequestException:
            return []  # not listening yet
        return answer.json()["workers"]  # type: ignore[no-any-return]

    wait_until(lambda: len(workers()) == 1, 30)  # the worker showed its certificate to register
    worker_url = workers()[0]["url"]
    with pytest.raises(requests.ConnectionError):  # TLS 1.3: the server refuses after the handshake, and hangs up
        requests.get(worker_url + "/healthz", verify=str(certs.ca), timeout=5)  # no certificate: no handshake
    for mode in ("proxy", "p2p"):  # the proxy shows its certificate to the worker; in p2p the client shows its own
        with Client(url, mode=mode, verify=str(certs.ca), cert=mine) as client:
            assert client.predict(IMAGE).predictions[0].label in ("a", "b", "c")
    with pytest.raises(ConnectionFailed), Client(url, mode="p2p", verify=str(certs.ca), retries=0) as client:
        client.predict(IMAGE)

    with_cert = triton_grpc.InferenceServerClient(
        f"127.0.0.1:{grpc_port}", ssl=True, root_certificates=str(certs.ca), private_key=str(certs.key),
        certificate_chain=str(certs.cert),
    )
    inputs = [triton_grpc.InferInput("IMAGE", [1], "BYTES")]
    inputs[0].set_data_from_numpy(np.array([IMAGE], dtype=np.object_))
    assert with_cert.infer("sleepy", inputs).as_numpy("COUNT").tolist() == [1]
    without = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}", ssl=True, root_certificates=str(certs.ca))
    with pytest.raises(Exception, match="(?i)unavailable|handshake|ssl|certificate"):
        without.infer("sleepy", inputs, client_timeout=5)
