"""Certificates as manifests/make-certs makes them, from openssl, for tests that speak mTLS."""
import subprocess


def make_certs(directory):
    """A CA; the agent's and the controller's certificates from it; a stranger's self-signed one."""
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
        "-subj", "/CN=kfault-ca", "-keyout", "ca.key", "-out", "ca.crt")
    for name, san in (("agent", "DNS:localhost,IP:127.0.0.1,DNS:kfault-agent"),
                      ("controller", "DNS:kfault-controller")):
        cn = "kfault-controller" if name == "controller" else "kfault-agent"
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", f"/CN={cn}",
            "-keyout", f"{name}.key", "-out", f"{name}.csr")
        (directory / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.crt")
    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
        "-subj", "/CN=kfault-controller", "-keyout", "stranger.key", "-out", "stranger.crt")
    return {p.stem + p.suffix: p.read_bytes() for p in directory.iterdir()}


def secret_dir(directory, who):
    """`who`'s Secret (kfault-agent-tls, kfault-controller-tls) as mounted: tls.crt, tls.key,
    ca.crt in a folder of `directory` made by make_certs; returns the folder."""
    mounted = directory / f"{who}-tls"
    mounted.mkdir()
    for key, made in (("tls.crt", f"{who}.crt"), ("tls.key", f"{who}.key"), ("ca.crt", "ca.crt")):
        (mounted / key).write_bytes((directory / made).read_bytes())
    return mounted
