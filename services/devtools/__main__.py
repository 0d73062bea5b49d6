"""`python -m services.devtools run|up|down|components`: the suite on this machine."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from services.devtools import components
from services.devtools.agent import LocalAgent
from services.devtools.fleet.fleet import fleet_ids
from services.devtools.processes import ManagedProcess
from services.devtools.stack import Stack
from services.platform.names import FIRMWARE_APP

app = typer.Typer(add_completion=False, help="Run Twinfleet locally as real processes.")
console = Console()
RUN_DIR = Path(".run")


@app.command()
def run(
    fleet: int = typer.Option(1000, help="simulated devices (0 for none)"),
    agents: int = typer.Option(1, help="device agents, each a Dapr app with its own sidecar (0 for none)"),
    topic_profile: str = typer.Option("default", help="device topic profile: default or aws"),
    run_dir: Path = typer.Option(RUN_DIR),
) -> None:
    """Start everything, print where it is, and stop it all on Ctrl-C."""
    stack = Stack(run_dir, topic_profile=topic_profile)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    try:
        stack.start()
        if fleet:
            stack.provision_devices(fleet_ids(fleet))
            simulator = ManagedProcess(
                "fleet-sim",
                [
                    sys.executable,
                    "-m",
                    "services.devtools.fleet",
                    "--devices",
                    str(fleet),
                    "--run-dir",
                    str(run_dir),
                ],
                stack.run_dir / "logs" / "fleet-sim.log",
            )
            simulator.start()
            stack.procs["fleet-sim"] = simulator
        agent_urls = [start_agent(stack, f"agent-{i:05d}").url for i in range(agents)]
        stack.write_state()
        (stack.run_dir / "ready").write_text(str(os.getpid()))
        token_file = stack.run_dir / "token"
        console.print(f"[bold green]Twinfleet is up[/] — REST API (every app) {stack.api_url}")
        console.print(f"admin token in {token_file} (the `twin` CLI uses it): ", end="")
        console.print(f'curl -H "Authorization: Bearer $(cat {token_file})" {stack.api_url}/v1/twins', soft_wrap=True)
        console.print(f"MQTT broker 127.0.0.1:{stack.mqtt_port}; {fleet} simulated devices (sim-00000…)")
        for name in stack.ports:
            console.print(f"{name} API schema: {stack.direct_url(name)}/docs")
        if "azurite" in stack.procs:
            console.print(f"artifacts in Azure Blob (Azurite) {stack.blob_endpoint}")
        console.print(f"release keys and the first root (offline in real life): {stack.release_team.directory}")
        for index, url in enumerate(agent_urls):
            console.print(f"device agent agent-{index:05d}: {url}/v1/status (post events to {url}/v1/events)")
        console.print(f"Try: TWINFLEET_RUN_DIR={run_dir} twin list   ·   logs in {stack.run_dir / 'logs'}")
        console.print("Ctrl-C stops everything.")
        while not stopping.wait(0.5):
            dead = [n for n, p in stack.procs.items() if not p.alive()]
            if dead:
                console.print(f"[red]stopped unexpectedly:[/] {', '.join(dead)} (see logs)")
                break
    except KeyboardInterrupt:
        pass
    finally:
        console.print("stopping…")
        (stack.run_dir / "ready").unlink(missing_ok=True)
        stack.stop()


def start_agent(stack: Stack, device_id: str) -> LocalAgent:
    """One device agent beside the suite, stopped with it."""
    password = stack.provision_devices([device_id])[device_id]
    root = stack.run_dir / "agents" / device_id
    env: dict[str, str] = {}
    if FIRMWARE_APP in stack.ports:  # software updates: a file swap stands in for the device's image
        env = {
            "TWINFLEET_DEVICE_PASSWORD": password,
            "TWINFLEET_SOFTWARE_INSTALLER": "file",
            "TWINFLEET_SOFTWARE_TARGET": str(root / "app" / "firmware.bin"),
            "TWINFLEET_SOFTWARE_FIRMWARE_URL": stack.direct_url(FIRMWARE_APP),
            "TWINFLEET_SOFTWARE_TRUSTED_ROOT": str(stack.trusted_root),
            "TWINFLEET_SOFTWARE_VERSION": "1.0.0",
        }
    agent = LocalAgent(root, device_id, password, stack.mqtt_port, env)
    agent.start()
    stack.procs[agent.app.name] = agent.app
    stack.procs[agent.daprd.name] = agent.daprd
    return agent


@app.command()
def up(fleet: int = typer.Option(1000), agents: int = typer.Option(1), run_dir: Path = typer.Option(RUN_DIR)) -> None:
    """Start `run` in the background and return once the suite is ready."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "ready").unlink(missing_ok=True)
    log = (run_dir / "devstack.log").open("ab")
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services.devtools",
            "run",
            "--fleet",
            str(fleet),
            "--agents",
            str(agents),
            "--run-dir",
            str(run_dir),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    (run_dir / "devstack.pid").write_text(str(child.pid))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (run_dir / "ready").exists():
            state = json.loads((run_dir / "stack.json").read_text())
            console.print(f"Twinfleet is up (pid {child.pid}) — REST API {state['api']}; `make down` stops it")
            return
        if child.poll() is not None:
            console.print(f"[red]failed to start[/]; see {run_dir / 'devstack.log'}")
            raise typer.Exit(1)
        time.sleep(0.2)
    raise typer.Exit(1)


@app.command()
def down(run_dir: Path = typer.Option(RUN_DIR)) -> None:
    """Stop what `up` started (by its pid)."""
    pid_file = run_dir / "devstack.pid"
    if not pid_file.exists():
        console.print("nothing running")
        return
    pid = int(pid_file.read_text())
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    pid_file.unlink(missing_ok=True)
    console.print("stopped")


AGENT_CHART_PARAMS = {
    "namespace": "{{ .Release.Namespace }}",
    "device_id": "{{ .Values.device.id }}",
    "credentials_secret": '{{ include "device-agent.credentialsSecret" . }}',
}
"""The agent-k3s target's parameters as Helm expressions: the chart fills them with `tpl`."""


def _backing(path: str) -> str:
    """A Helm expression for `global.backing.<path>` in the cloud chart's values."""
    return f"{{{{ .Values.global.backing.{path} }}}}"


def _required(path: str) -> str:
    """The same, failing the render when unset (the message in backquotes: Go's raw string
    survives the YAML's quoting)."""
    return f"{{{{ required `global.backing.{path} is required` .Values.global.backing.{path} }}}}"


CHART_PARAMS = {
    "namespace": "{{ .Release.Namespace }}",
    "tracing_sampling_rate": "{{ .Values.global.dapr.tracingSamplingRate }}",
    "state_secret": _backing("state.secret"),
    "state_redis_tls": _backing("state.redis.enableTLS"),
    "cosmosdb_url": _required("state.cosmosdb.url"),
    "cosmosdb_database": _backing("state.cosmosdb.database"),
    "cosmosdb_collection": _backing("state.cosmosdb.collection"),
    "pubsub_secret": _backing("pubsub.secret"),
    "pubsub_redis_tls": _backing("pubsub.redis.enableTLS"),
    "kafka_brokers": _required("pubsub.kafka.brokers"),
    "servicebus_namespace": _required("pubsub.servicebus.namespace"),
    "broker_secret": _backing("broker.secret"),
    "keyvault_name": _required("secrets.keyvault.name"),
    "events_secret": _backing("events.secret"),
    "events_container": _backing("events.container"),
    "events_blob_account": _required("events.blob.accountName"),
    "events_s3_region": _backing("events.s3.region"),
    "events_s3_endpoint": _backing("events.s3.endpoint"),
    "artifacts_secret": _backing("artifacts.secret"),
    "artifacts_container": _backing("artifacts.container"),
    "artifacts_blob_account": _required("artifacts.blob.accountName"),
    "artifacts_s3_region": _backing("artifacts.s3.region"),
    "artifacts_s3_endpoint": _backing("artifacts.s3.endpoint"),
}
"""The aks target's parameters as Helm expressions (the cloud chart's values), filled with `tpl`."""
CLOUD_CHART_DAPR = Path("aks") / "twinfleet" / "files" / "dapr"


PACKAGED_DAPR = Path(__file__).resolve().parents[2] / "twinfleet" / "testing" / "dapr"
PACKAGED_TARGETS = {"cloud": "local", "agent": "agent-local"}
"""What `twinfleet.testing` carries (it runs without the templates): these targets rendered with
their `{placeholders}` kept, filled when a suite starts."""


@app.command("components")
def render_components(
    out: Path = typer.Option(Path("deploy")),
    package: Path = typer.Option(PACKAGED_DAPR, help="twinfleet.testing's copies"),
) -> None:
    """Render the Dapr components into the Helm charts (aks: the cloud suite's, every backing
    service; agent-k3s: the device agent's), the k3s target for cloud apps on an edge gateway,
    and the suite's on one machine (local, agent-local) into `twinfleet.testing`."""
    directory = out / "k3s" / "dapr"
    components.write("k3s", directory)
    console.print(f"wrote {directory}")
    write_rendered(out / CLOUD_CHART_DAPR, "aks", CHART_PARAMS)
    write_rendered(out / "k3s" / "device-agent" / "files" / "dapr", "agent-k3s", AGENT_CHART_PARAMS)
    for kind, target in PACKAGED_TARGETS.items():
        write_rendered(package / kind, target)


def write_rendered(directory: Path, target: str, params: dict[str, str] | None = None) -> None:
    """Render `target` into `directory` (replacing what was there), each file saying where it came from."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.rglob("*.yaml"):
        stale.unlink()
    header = f"# Rendered by `make components` from components/ (target {target}): edit those, not this.\n"
    for file_name, text in components.render(target, params).items():
        (directory / file_name).parent.mkdir(parents=True, exist_ok=True)
        (directory / file_name).write_text(header + text)
    console.print(f"wrote {directory}")


images = typer.Typer(add_completion=False, help="The suite's container images (`make images`).")
app.add_typer(images, name="images")


def _cache() -> Path:
    return Path(os.environ.get("TWINFLEET_CACHE", Path.home() / ".cache" / "twinfleet")) / "images"


@images.command("build")
def build_images(
    daprd: Path = typer.Option(..., help="the daprd binary the image carries (the Makefile's)"),
    device_daprd: Path = typer.Option(..., help="the device's daprd build (the Makefile's daprd-device)"),
    no_cache: bool = typer.Option(False, help="rebuild every image from nothing"),
    ids: Path | None = typer.Option(None, help="write image name -> ID (JSON) here"),
) -> None:
    """Build every image that is missing or whose inputs changed; print what each is."""
    from services.devtools.images.build import Builder

    started = time.monotonic()
    outcomes = Builder(_cache(), daprd, device_daprd, no_cache).build_all()
    if ids is not None:
        ids.write_text(json.dumps({outcome.name: outcome.image_id for outcome in outcomes}))
    table = Table("image", "size", "", "seconds", box=None)
    for outcome in outcomes:
        table.add_row(
            outcome.tag,
            f"{outcome.size / 1e6:.1f} MB",
            "built" if outcome.built else "reused",
            f"{outcome.seconds:.1f}",
        )
    console.print(table)
    console.print(f"images ready in {time.monotonic() - started:.1f} s")


@images.command("verify")
def verify_images(
    daprd: Path = typer.Option(..., help="the daprd binary the image carries (the Makefile's)"),
    device_daprd: Path = typer.Option(..., help="the device's daprd build (the Makefile's daprd-device)"),
    only: list[str] = typer.Option(
        [], help="image names (python, app, daprd, daprd-device, redis, mosquitto); default all"
    ),
) -> None:
    """Rebuild images from nothing and check they come out with the same ID (reproducible)."""
    from services.devtools.images.build import Builder

    differ = False
    for tag, current, rebuilt in Builder(_cache(), daprd, device_daprd).verify_all(only):
        same = current == rebuilt
        differ |= not same
        console.print(f"{tag}: {current[:19]} {'==' if same else '!='} {rebuilt[:19]}")
    if differ:
        raise typer.Exit(1)


@images.command("lock")
def lock_image_dependencies() -> None:
    """Resolve the runtime dependencies with the image's Python; rewrite images/python/*.lock."""
    from services.devtools.images.lock import LOCK, write_locks

    console.print(f"{write_locks()} pins -> {LOCK}")


containers = typer.Typer(add_completion=False, help="The suite in containers (`make up-containers`).")
app.add_typer(containers, name="containers")
CONTAINERS_RUN_DIR = Path(".run-containers")


@containers.command("up")
def containers_up(
    devices: int = typer.Option(0, help="device accounts to provision (demo-00000, ...)"),
    run_dir: Path = typer.Option(CONTAINERS_RUN_DIR),
) -> None:
    """Start the suite in containers and leave it running; `twin` finds it with
    TWINFLEET_RUN_DIR=<run-dir>."""
    from twinfleet.testing import TwinfleetSuite

    state_file = run_dir / "stack.json"
    if state_file.exists():
        console.print(f"already up (suite {json.loads(state_file.read_text())['suite']}); `make down-containers` first")
        raise typer.Exit(1)
    suite = TwinfleetSuite(keep=True).start()
    credentials = suite.provision_devices([f"demo-{i:05d}" for i in range(devices)])
    run_dir.mkdir(parents=True, exist_ok=True)
    token_file = run_dir / "token"
    token_file.write_text(suite.admin_token + "\n")
    token_file.chmod(0o600)
    state = {
        "suite": suite.suite_id,
        "api": suite.api_url,
        "apps": dict.fromkeys(suite.urls, suite.api_url),  # the ingress routes by path
        "token_file": str(token_file.resolve()),
        "release_dir": str(suite.release_team.directory),
        "key_dir": str(suite.directory),
        "mqtt": {"host": suite.mqtt_host, "port": suite.mqtt_port},
        "topic_profile": suite.topic_profile,
        "devices": credentials,
    }
    state_file.write_text(json.dumps(state, indent=2))
    state_file.chmod(0o600)
    console.print(
        f"[bold green]Twinfleet is up in containers[/] (in {suite.start_seconds:.1f} s) — REST API {suite.api_url}"
    )
    console.print(f"Admin token in {token_file} (the `twin` CLI sends it)")
    console.print(f"MQTT broker {suite.mqtt_host}:{suite.mqtt_port}; device credentials in {state_file}")
    console.print(f"Try: TWINFLEET_RUN_DIR={run_dir} twin list   ·   `make down-containers` removes it")


@containers.command("down")
def containers_down(run_dir: Path = typer.Option(CONTAINERS_RUN_DIR)) -> None:
    """Remove the containers and the network `up` started."""
    from twinfleet.testing.suite import remove_suite

    state_file = run_dir / "stack.json"
    if not state_file.exists():
        console.print("nothing running")
        return
    state = json.loads(state_file.read_text())
    remove_suite(state["suite"])
    if state.get("key_dir"):
        shutil.rmtree(state["key_dir"], ignore_errors=True)  # the kept suite's issuer and release keys
    (run_dir / "token").unlink(missing_ok=True)
    state_file.unlink()
    console.print("removed")


if __name__ == "__main__":
    app()
