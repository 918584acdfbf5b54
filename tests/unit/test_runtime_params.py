"""The runtime's parameters are declared once; every other view of them agrees.

shared/runtime_params.py declares the tunables. The runtime's config, the request
side (``POST /serve``, the ModelServe spec), the CRD's schema, the CLI options and
their environment variables are derived; these tests fail when one drifts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError
from pydantic.alias_generators import to_camel
from typer.main import get_command

from modelserve.cli import app
from modelserve.functions.api.schemas import ServeBody
from modelserve.runtime.config import RuntimeConfig, build_config
from modelserve.shared import modelserve as ms
from modelserve.shared.runtime_params import TUNABLES, RuntimeParams, env_name

REPO = Path(__file__).resolve().parents[2]


def bounds(schema: dict[str, Any]) -> tuple[Any, Any]:
    """(minimum, maximum) of a field's JSON schema, looking inside an optional's anyOf."""
    for option in [schema, *schema.get("anyOf", [])]:
        if "minimum" in option or "maximum" in option:
            return option.get("minimum"), option.get("maximum")
    return None, None


def test_the_request_side_has_every_tunable_optional_with_the_same_bounds() -> None:
    assert tuple(RuntimeParams.model_fields) == TUNABLES
    assert set(TUNABLES) <= set(RuntimeConfig.model_fields)
    assert RuntimeParams().as_runtime_args() == {}  # unset: the runtime's defaults apply
    runtime = RuntimeConfig.model_json_schema()["properties"]
    request = RuntimeParams.model_json_schema(by_alias=False)["properties"]
    for name in TUNABLES:
        assert bounds(request[name]) == bounds(runtime[name]), name
        low, high = bounds(runtime[name])
        for bad in (low - 1 if low is not None else None, high + 1 if high is not None else None):
            if bad is None:
                continue
            with pytest.raises(ValidationError):
                RuntimeParams.model_validate({name: bad})
            with pytest.raises(ValidationError):
                RuntimeConfig.model_validate({"model": "m", name: bad})
    # POST /serve takes the same model, so a new parameter is servable at once.
    assert ServeBody.model_fields["runtime_params"].annotation is RuntimeParams
    body = ServeBody.model_validate({"model": "demo", "runtime_params": {"n_parallel": 3}})
    assert body.runtime_params.as_runtime_args() == {"n_parallel": 3}


def test_the_crd_schema_lists_the_tunables_with_their_bounds() -> None:
    crd = yaml.safe_load((REPO / "config" / "crd" / "modelserve.yaml").read_text())
    (version,) = crd["spec"]["versions"]
    runtime = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["runtime"]
    declared = RuntimeParams.model_json_schema(by_alias=True)["properties"]
    assert set(runtime["properties"]) == {to_camel(n) for n in TUNABLES}
    for name, schema in runtime["properties"].items():
        assert (schema.get("minimum"), schema.get("maximum")) == bounds(declared[name]), name


def test_the_cli_has_an_option_and_a_variable_for_every_parameter() -> None:
    command = get_command(app).commands["runtime"]  # type: ignore[attr-defined]
    options = {p.name: p for p in command.params}
    assert set(options) == set(RuntimeConfig.model_fields)
    for name, option in options.items():
        assert option.envvar == env_name(name)
        assert f"--{name.replace('_', '-')}" in option.opts
        assert option.required == RuntimeConfig.model_fields[name].is_required()


def test_what_the_operator_sets_is_what_the_runtime_reads() -> None:
    chosen = RuntimeParams(n_ctx=1024, n_batch=256, n_parallel=3, prefix_cache=0, seed=7)
    spec = ms.ModelServeSpec(
        server_uuid="00000000-0000-4000-8000-000000000000",  # type: ignore[arg-type]
        model_name="demo",
        storage_uri="s3://models/demo/demo.gguf",
        runtime=chosen,
    )
    # Through the resource (camelCase) and back, then as the runtime builds its config.
    again = ms.spec_of(ms.manifest(spec, "ns")).runtime
    config = build_config(model="/mnt/models", **again.as_runtime_args())
    assert (config.n_ctx, config.n_batch, config.slots(), config.cached_sequences()) == (
        1024,
        256,
        3,
        0,
    )
    assert config.seed == 7 and config.max_queue == RuntimeConfig.model_fields["max_queue"].default
