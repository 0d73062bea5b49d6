"""Render the Dapr component, resiliency and configuration YAML for one target (local, k3s, aks)
from the single set of templates in `components/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
import yaml

from services.platform import names

ROOT = Path(__file__).resolve().parents[2] / "components"
TARGETS = ("local", "k3s", "aks")


def render(target: str, params: dict[str, str] | None = None) -> dict[str, str]:
    """File name -> YAML text. `params` fill `{name}` placeholders in the target's values."""
    values: dict[str, Any] = yaml.safe_load((ROOT / "targets" / f"{target}.yaml").read_text())
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROOT / "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    common = {
        "names": {k: getattr(names, k) for k in dir(names) if k.isupper()},
        "namespace": values.get("namespace") or "",
    }
    files: dict[str, str] = {}
    for constant, component in values["components"].items():
        name = getattr(names, constant)
        component = {**component, "metadata": _fill(component["metadata"], params or {})}
        text = env.get_template("component.yaml.j2").render(common, name=name, component=component)
        files[f"{name}.yaml"] = text
    files["resiliency.yaml"] = env.get_template("resiliency.yaml.j2").render(common, **values)
    files["configuration.yaml"] = env.get_template("configuration.yaml.j2").render(common, **values)
    return files


def _fill(metadata: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    filled: dict[str, Any] = {}
    for key, value in metadata.items():
        if isinstance(value, str):
            for param, replacement in params.items():
                value = value.replace("{" + param + "}", replacement)
        filled[key] = value
    return filled


def write(target: str, directory: Path, params: dict[str, str] | None = None) -> Path:
    """Render into `directory` (resources go to `directory/resources`, config alongside)."""
    resources = directory / "resources"
    resources.mkdir(parents=True, exist_ok=True)
    for file_name, text in render(target, params).items():
        path = directory / file_name if file_name == "configuration.yaml" else resources / file_name
        path.write_text(text)
    return resources
