"""Podman for the container-stack test: finds an engine that can run a container here, makes the base
image the Dockerfile starts from, and builds the images the compose file names.

No registry answers on the build machines (docker.io is out of reach), so where `debian:bookworm-slim`
cannot be pulled the base is built from Debian's archive with debootstrap and imported, and Postgres
and Redis are stand-ins built from Debian's packages (tests/container/standins). The compresso image
itself is built from the project's own Dockerfile, unchanged, with that base as `BASE_IMAGE`.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STANDINS = Path(__file__).parent / "standins"
BASE_IMAGE = "localhost/compresso-test-base:bookworm"
COMPRESSO_IMAGE = "localhost/compresso:latest"
POSTGRES_IMAGE = "localhost/compresso-test-postgres:15"
REDIS_IMAGE = "localhost/compresso-test-redis:7"
# What the Dockerfile installs from Debian anyway; in the base already, the build does not wait on it twice.
BASE_PACKAGES = "python3,python3-venv,ca-certificates,curl"
# Sandboxes that forbid setrlimit refuse podman's default ulimits; crun refuses hybrid cgroup hierarchies.
# Tried only when a container does not start with the engine's own settings.
SANDBOX_CONF = '[containers]\ndefault_ulimits = []\n[engine]\nruntime = "runc"\n'


@dataclass(frozen=True)
class Podman:
    env: dict[str, str]

    def run(self, *args: str, timeout: float = 600, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run(
            ["podman", *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False, **kwargs
        )
        if check and result.returncode != 0:
            raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n{result.stderr[-4000:]}")
        return result

    def image_exists(self, image: str) -> bool:
        return self.run("image", "exists", image, check=False).returncode == 0

    def compose(self, project: str, files: list[Path], *args: str, timeout: float = 600,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "podman_compose", "-p", project]
        for file in files:
            command += ["-f", str(file)]
        result = subprocess.run(
            [*command, *args], env={**self.env, **(env or {})}, cwd=ROOT, capture_output=True, text=True,
            timeout=timeout, check=False,
        )
        if result.returncode != 0:
            raise AssertionError(f"podman-compose {' '.join(args)} exited {result.returncode}:\n"
                                 f"{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result


def find_podman(workdir: Path) -> tuple[Podman | None, str]:
    """A podman that can start a container here, or None and why not."""
    if shutil.which("podman") is None:
        return None, "podman is not installed (make install-container-engine installs it from Debian)"
    plain = Podman(env=dict(os.environ))
    info = plain.run("info", check=False, timeout=120)
    if info.returncode != 0:
        return None, f"podman cannot start: {info.stderr.strip()[-500:]}"
    problem = ensure_base_image(plain, workdir)
    if problem:
        return None, problem
    probe = plain.run("run", "--rm", BASE_IMAGE, "true", check=False, timeout=120)
    if probe.returncode == 0:
        return plain, ""
    conf = workdir / "containers.conf"
    conf.write_text(SANDBOX_CONF)
    sandboxed = Podman(env={**os.environ, "CONTAINERS_CONF": str(conf)})
    retry = sandboxed.run("run", "--rm", BASE_IMAGE, "true", check=False, timeout=120)
    if retry.returncode == 0:
        return sandboxed, ""
    return None, (f"podman cannot run a container here: {probe.stderr.strip()[-300:]}; with {SANDBOX_CONF!r}: "
                  f"{retry.stderr.strip()[-300:]}")


def ensure_base_image(podman: Podman, workdir: Path) -> str:
    """Tags BASE_IMAGE from a registry's debian:bookworm-slim, or builds it with debootstrap. Returns a
    problem, or "" when the image exists."""
    if podman.image_exists(BASE_IMAGE):
        return ""
    pulled = podman.run("pull", "docker.io/library/debian:bookworm-slim", check=False, timeout=300)
    if pulled.returncode == 0:
        podman.run("tag", "docker.io/library/debian:bookworm-slim", BASE_IMAGE)
        return ""
    if shutil.which("debootstrap") is None:
        return ("no registry answers (pulling debian:bookworm-slim failed) and debootstrap is not installed "
                "(make install-container-engine installs it)")
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=workdir))
    try:
        bootstrap = subprocess.run(
            ["debootstrap", "--variant=minbase", f"--include={BASE_PACKAGES}", "bookworm", str(rootfs),
             "http://deb.debian.org/debian"], capture_output=True, text=True, timeout=900, check=False,
        )
        if bootstrap.returncode != 0:
            return f"debootstrap failed: {bootstrap.stdout[-500:]}{bootstrap.stderr[-500:]}"
        changes = ['CMD ["/bin/bash"]']
        # A proxy that re-signs TLS (as on the build machines) is trusted by the host's bundle only: pip in
        # the build trusts what the host trusts.
        host_bundle = Path(os.environ.get("SSL_CERT_FILE", "/etc/ssl/certs/ca-certificates.crt"))
        if host_bundle.is_file():
            shutil.copy(host_bundle, rootfs / "etc/ssl/host-ca-bundle.crt")
            changes += [f"ENV {name}=/etc/ssl/host-ca-bundle.crt"
                        for name in ("PIP_CERT", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")]
        if local_wheels():
            changes.append("ENV PIP_FIND_LINKS=/wheels")
        archive = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        arguments = ["import"] + [f"--change={change}" for change in changes] + ["-", BASE_IMAGE]
        imported = podman.run(*arguments, stdin=archive.stdout, check=False)
        archive.wait()
        return "" if imported.returncode == 0 else f"podman import failed: {imported.stderr[-500:]}"
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def local_wheels() -> Path | None:
    """The host's folder of local wheels (the build machines keep torch's CPU wheel there, and PyTorch's
    own index does not answer): the builds mount it at /wheels."""
    folder = os.environ.get("PIP_FIND_LINKS", "")
    return Path(folder) if folder and Path(folder).is_dir() else None


def build_images(podman: Podman) -> None:
    """The compresso image from the Dockerfile (CPU torch), and the Postgres and Redis stand-ins."""
    mount = ["--volume", f"{local_wheels()}:/wheels:ro"] if local_wheels() else []
    # PyTorch's CPU index is the Dockerfile's default; where it does not answer, PyPI serves the rest and
    # the local CPU wheel (2.13.0+cpu sorts above PyPI's 2.13.0) is taken from /wheels.
    index = [] if not mount else ["--build-arg", "TORCH_INDEX_URL=https://pypi.org/simple"]
    podman.run("build", "--network", "host", *mount, "--build-arg", f"BASE_IMAGE={BASE_IMAGE}", *index,
               "--tag", COMPRESSO_IMAGE, str(ROOT), timeout=3600)
    for image, name in ((POSTGRES_IMAGE, "postgres"), (REDIS_IMAGE, "redis")):
        podman.run("build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
                   "--file", str(STANDINS / f"{name}.Containerfile"), "--tag", image, str(STANDINS), timeout=900)
