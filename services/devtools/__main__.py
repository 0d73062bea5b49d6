"""`python -m services.devtools run|up|down|components`: the suite on this machine."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import typer
from rich.console import Console

from services.devtools import components
from services.devtools.agent import LocalAgent
from services.devtools.fleet.fleet import fleet_ids
from services.devtools.processes import ManagedProcess
from services.devtools.stack import SUITE, Stack
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
    stack = Stack(run_dir, topic_profile=topic_profile, apps=SUITE)
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
        console.print(f"operator console {stack.api_url}/console (sign in with the admin token)")
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


@app.command("components")
def render_components(out: Path = typer.Option(Path("deploy"))) -> None:
    """Render the Dapr components for the k3s and aks targets, and the device agent's (agent-k3s)
    into its Helm chart."""
    for target in ("k3s", "aks"):
        directory = out / target / "dapr"
        components.write(target, directory)
        console.print(f"wrote {directory}")
    chart_files = out / "k3s" / "device-agent" / "files" / "dapr"
    chart_files.mkdir(parents=True, exist_ok=True)
    for stale in chart_files.glob("*.yaml"):
        stale.unlink()
    header = "# Rendered by `make components` from components/ (target agent-k3s): edit those, not this.\n"
    for file_name, text in components.render("agent-k3s", AGENT_CHART_PARAMS).items():
        (chart_files / file_name).write_text(header + text)
    console.print(f"wrote {chart_files}")


if __name__ == "__main__":
    app()
