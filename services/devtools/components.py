"""Render the Dapr component, resiliency and configuration YAML for one target (local, k3s, aks)
from the single set of templates in `components/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from services.platform import names

ROOT = Path(__file__).resolve().parents[2] / "components"
TARGETS = ("local", "k3s", "aks", "agent-local", "agent-k3s")
"""Cloud apps: local, k3s, aks. The device agent: agent-local (tests, `make run`), agent-k3s."""


def render(target: str, params: dict[str, str] | None = None) -> dict[str, str]:
    """File name -> YAML text. `params` fill `{name}` placeholders in the target's values."""
    import jinja2  # a development dependency: installed packages carry rendered copies (`fill` them)

    values: dict[str, Any] = yaml.safe_load((ROOT / "targets" / f"{target}.yaml").read_text())
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROOT / "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    common = {
        "names": {k: getattr(names, k) for k in dir(names) if k.isupper()},
        "namespace": fill(values.get("namespace") or "", params or {}),
    }
    files: dict[str, str] = {}
    pubsubs = [getattr(names, c) for c, comp in values["components"].items() if comp["type"].startswith("pubsub.")]
    common["pubsubs"] = pubsubs
    for constant, component in values["components"].items():
        name = getattr(names, constant)
        component = {**component, "metadata": fill(component["metadata"], params or {})}
        text = env.get_template("component.yaml.j2").render(common, name=name, component=component)
        files[f"{name}.yaml"] = text
    settings = {k: v for k, v in values.items() if k not in common}
    files["resiliency.yaml"] = env.get_template("resiliency.yaml.j2").render(common, **settings)
    files["configuration.yaml"] = env.get_template("configuration.yaml.j2").render(common, **settings)
    return files


def fill(value: Any, params: dict[str, str]) -> Any:
    """`value` with `{param}` placeholders replaced in every string it holds (placeholders not in
    `params`, such as Dapr's own `{appID}`, stay)."""
    if isinstance(value, str):
        for param, replacement in params.items():
            value = value.replace("{" + param + "}", replacement)
        return value
    if isinstance(value, dict):
        return {key: fill(item, params) for key, item in value.items()}
    return value


def write(target: str, directory: Path, params: dict[str, str] | None = None) -> Path:
    """Render into `directory` (resources go to `directory/resources`, config alongside)."""
    resources = directory / "resources"
    resources.mkdir(parents=True, exist_ok=True)
    for file_name, text in render(target, params).items():
        path = directory / file_name if file_name == "configuration.yaml" else resources / file_name
        path.write_text(text)
    return resources
