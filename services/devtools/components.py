"""Render the Dapr component, resiliency and configuration YAML for one target (local, k3s, aks)
from the single set of templates in `components/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from services.platform import names

ROOT = Path(__file__).resolve().parents[2] / "components"
TARGETS = ("local", "k3s", "aks", "agent-local", "agent-k3s")
"""Cloud apps: local (processes and containers on one machine), k3s, aks (the Helm chart, every
backing service). The device agent: agent-local (tests, `make run`, containers), agent-k3s."""


def render(target: str, params: dict[str, str] | None = None) -> dict[str, str]:
    """File name -> YAML text. `params` fill `{name}` placeholders in the target's values.

    A component with `variants` (the Helm chart's target: one per backing service the values can
    choose) renders each as `<choice>/<variant>.yaml`; every variant of a component is the same
    kind (all pub/subs, or none), so the resiliency policy names it whichever is chosen."""
    import jinja2  # a development dependency: installed packages carry rendered copies (`fill` them)

    params = params or {}
    values: dict[str, Any] = yaml.safe_load((ROOT / "targets" / f"{target}.yaml").read_text())
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(ROOT / "templates"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
    )
    common: dict[str, Any] = {
        "names": {k: getattr(names, k) for k in dir(names) if k.isupper()},
        "namespace": fill(values.get("namespace") or "", params),
    }
    files: dict[str, str] = {}
    choices = {constant: _variants(component) for constant, component in values["components"].items()}
    common["pubsubs"] = [
        getattr(names, constant)
        for constant, variants in choices.items()
        if all(v["type"].startswith("pubsub.") for v in variants.values())
    ]
    for constant, variants in choices.items():
        name = getattr(names, constant)
        for path, variant in variants.items():
            component = {**variant, "metadata": fill(variant["metadata"], params)}
            text = env.get_template("component.yaml.j2").render(common, name=name, component=component)
            files[path or f"{name}.yaml"] = text
    settings = fill({k: v for k, v in values.items() if k not in ("namespace", "components")}, params)
    if "mtls" in values:  # the caller's app id comes from its certificate: no mTLS, no access control
        settings["access_control"] = yaml.safe_load((ROOT / "access-control.yaml").read_text())
    files["resiliency.yaml"] = env.get_template("resiliency.yaml.j2").render(common, **settings)
    files["configuration.yaml"] = env.get_template("configuration.yaml.j2").render(common, **settings)
    if "mtls" in values:
        files["daprsystem.yaml"] = env.get_template("daprsystem.yaml.j2").render(common, **settings)
    return files


def _variants(component: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """File path -> the component as rendered ("" for a component without variants)."""
    if "variants" not in component:
        return {"": component}
    kinds = {v["type"].startswith("pubsub.") for v in component["variants"].values()}
    if len(kinds) != 1:
        raise ValueError(f"the variants of {component['choice']} are not all of one kind")
    return {
        f"{component['choice']}/{variant}.yaml": {**spec, "scopes": component["scopes"]}
        for variant, spec in component["variants"].items()
    }


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
    """Render into `directory` (resources go to `directory/resources`, config alongside), for
    daprd's `--resources-path` and `--config`."""
    resources = directory / "resources"
    resources.mkdir(parents=True, exist_ok=True)
    for file_name, text in render(target, params).items():
        path = (
            directory / file_name if file_name in ("configuration.yaml", "daprsystem.yaml") else resources / file_name
        )
        path.write_text(text)
    return resources
